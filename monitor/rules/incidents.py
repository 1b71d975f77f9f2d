"""Incidents: the open findings that share one cause. Pure; `now` passed in.

Contract: DESIGN.md "Incidents". The choices made where it leaves room are marked *interpretation*.

Input: the open findings as `OpenFinding` (the pure Finding plus its stored id, first_seen, last_seen and
occurred_at), the outage windows of `outage_windows(probe_history)`, and the app log's failures (event id ->
error text, see `log_failures`). A finding's time is its occurred_at (the payment's or the event's time),
else its first_seen.

Causes, and the findings each holds:
- outage: an outage of a component (not one of the monitor's own, MONITOR_COMPONENTS) holds every finding
  (but endpoint_misconfigured) whose time falls in [start - slack_before, (end or now) + slack_after]. The
  default slack is root cause's: a finding is in the outage its "Why:" hint names.
- endpoint: an open endpoint_misconfigured finding holds itself and every webhook_missing (delivered
  elsewhere) and webhook_undelivered finding.
- app_error: the webhook_failed findings whose app-log error has one `signature` (numbers, ids, e-mails and
  hex normalised away) are one incident; its detail is the earliest failure's text, word for word.
- unknown: the findings in no other incident, together, when there are any.
Every incident but unknown also holds the other findings of its findings' payments and events (an outage's
paid_without_subscription brings the webhook_failed of the same payment, and the other way round). A finding
may be in several incidents; a customer in two causes is counted in both.

Identity: an incident's id is derived from its cause only (the outage's component and start, the endpoint
finding's id, the error signature, or "unknown"), never from its findings, so it survives findings opening and
resolving between runs; an incident with no open findings is simply not returned (resolved).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta

import pandas as pd

from monitor.rules.findings import AT_RISK_KINDS, Finding, amount_at_risk
from monitor.rules.outages import DOWN, Outage, format_window
from monitor.rules.root_cause import AFTER_PAYMENT, BEFORE_PAYMENT
from monitor.rules.timefmt import iso, to_utc
from monitor.rules.webhook_health import latest_log_entries, py

OUTAGE, ENDPOINT, APP_ERROR, UNKNOWN = "outage", "endpoint", "app_error", "unknown"
CAUSE_KINDS: tuple[str, ...] = (
    OUTAGE,
    ENDPOINT,
    APP_ERROR,
    UNKNOWN,
)  # also the order incidents are listed in
OPEN = "open"
# The payments an activation repair can give access to: money taken, no access given.
RECOVERABLE_KINDS: tuple[str, ...] = AT_RISK_KINDS
# What a misconfigured endpoint causes: events delivered elsewhere, or not delivered at all.
ENDPOINT_KINDS: tuple[str, ...] = ("webhook_missing", "webhook_undelivered")
# The monitor's own components: their outages cannot stop the app from activating a payment.
MONITOR_COMPONENTS: tuple[str, ...] = ("monitor_db", "scheduler")
ENDPOINT_COMPONENT = "webhook_endpoint"
NO_CAUSE = "no outage, endpoint problem or app-log error is known around these findings"


# --- the input --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenFinding:
    """An open finding as the store keeps it: the Finding, its stored id and its lifecycle times."""

    id: str
    finding: Finding
    first_seen: datetime
    last_seen: datetime | None = None  # None: first_seen
    occurred_at: datetime | None = None  # None: the Finding's own occurred_at

    @property
    def time(self) -> datetime:
        """When the thing it is about happened (the payment, the event), else when it was first seen."""
        return to_utc(self.occurred_at or self.finding.occurred_at or self.first_seen)

    @property
    def seen(self) -> datetime:
        return to_utc(self.last_seen or self.first_seen)


_FINDING_FIELDS = tuple(f.name for f in fields(Finding))


def open_finding(stored: Finding | Mapping) -> OpenFinding:
    """An OpenFinding from one of the store's findings: a Finding that also carries its lifecycle times
    (monitor.store.lifecycle.StoredFinding: first_seen, last_seen), taken as it is, or DESIGN's JSON
    object of one (ISO times, no `key`; the Finding's key is then its id)."""
    if isinstance(stored, Finding):
        return OpenFinding(
            id=stored.id,
            finding=stored,
            first_seen=to_utc(stored.first_seen),
            last_seen=getattr(stored, "last_seen", None),
            occurred_at=stored.occurred_at,
        )
    values = {k: stored.get(k) for k in _FINDING_FIELDS if k in stored}
    values["key"] = stored.get("key") or stored["id"]
    values["subscription_ids"] = list(stored.get("subscription_ids") or [])
    values["hint"] = stored.get("hint") or ""
    values["occurred_at"] = _time(stored.get("occurred_at"))
    return OpenFinding(
        id=stored["id"],
        finding=Finding(**values),
        first_seen=_time(stored["first_seen"]),
        last_seen=_time(stored.get("last_seen")),
        occurred_at=values["occurred_at"],
    )


def _time(value) -> datetime | None:
    if value is None or isinstance(value, datetime):
        return value
    return to_utc(datetime.fromisoformat(str(value).replace("Z", "+00:00")))


def log_failures(webhook_log: pd.DataFrame | None, *, ok_statuses: Sequence[str]) -> dict[str, str]:
    """Event id -> the error text of its latest app-log row, for events whose latest row is a failure
    ("failed (no error text)" when the row has none). None (the app keeps no log): no failures."""
    if webhook_log is None:
        return {}
    latest = latest_log_entries(webhook_log, ok_statuses=ok_statuses)
    failed = latest[~latest["ok"]]
    out = {}
    for event_id, status, error in zip(failed.index, failed["status"], failed["error"], strict=True):
        text = (py(error) or "").strip()
        out[str(event_id)] = text or f"{py(status) or 'no status'} (no error text)"
    return out


# --- error signatures -------------------------------------------------------------------------------------

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_UUID = re.compile(r"\b[0-9a-fA-F]{8}(?:-[0-9a-fA-F]{4}){3}-[0-9a-fA-F]{12}\b")
# Stripe's object ids (https://docs.stripe.com/api: every id is a prefix, an underscore and a token).
_STRIPE_ID = re.compile(
    r"\b(?:acct|cs|cus|evt|in|ii|il|pi|pm|price|prod|py|re|dp|ch|sub|si|seti|src|txn|we|whsec)_\w+"
)
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{8,}\b")
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
_SPACE = re.compile(r"\s+")


def error_line(text: str) -> str:
    """The line of an error text that names the error: a Python traceback's last line, else the first."""
    lines = [line.strip() for line in str(text).splitlines() if line.strip()]
    if not lines:
        return ""
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def signature(text: str) -> str:
    """What the same error says every time: its error line with e-mails, UUIDs, Stripe ids, hex strings and
    numbers replaced by placeholders, so "Error 111 connecting to localhost:6379." from many events, hosts
    or ports is one signature."""
    line = _EMAIL.sub("<email>", error_line(text))
    line = _UUID.sub("<uuid>", line)
    line = _STRIPE_ID.sub("<id>", line)
    line = _HEX.sub("<hex>", line)
    line = _NUMBER.sub("N", line)
    return _SPACE.sub(" ", line).strip()


# --- the output -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cause:
    """Why an incident's findings happened. `key` is its identity; `start`/`end` are DESIGN's from/to
    (an outage's window, an app error's first and last failure; end None: still going)."""

    kind: str  # one of CAUSE_KINDS
    key: str
    component: str | None
    detail: str
    start: datetime | None
    end: datetime | None
    status: str | None = None  # an outage's "down" or "degraded"

    def title(self, *, now: datetime) -> str:
        """One line for a person: 'redis:channels down 12:41–13:05 UTC', 'webhook endpoint misconfigured',
        'app error “…”', 'no known cause'."""
        if self.kind == OUTAGE and self.start is not None:
            window = format_window(Outage(self.component or "", self.start, self.end, "", ""), now=now)
            return f"{self.component} {self.status} {window}"
        if self.kind == ENDPOINT:
            return "webhook endpoint misconfigured"
        if self.kind == APP_ERROR:
            return f"app error \u201c{self.detail}\u201d"
        return "no known cause"

    def to_json(self) -> dict:
        return {
            "kind": self.kind,
            "component": self.component,
            "detail": self.detail,
            "from": iso(self.start),
            "to": iso(self.end),
        }


@dataclass(frozen=True)
class Incident:
    """Open findings sharing one cause, with what they add up to. Ids and customers are sorted."""

    id: str  # from the cause's key only: stable across runs
    status: str  # "open"
    cause: Cause
    opened_at: datetime  # the earliest first_seen of its findings
    last_seen: datetime  # the latest last_seen of its findings
    finding_ids: tuple[str, ...]
    payment_ids: tuple[str, ...]
    customer_keys: tuple[str, ...]  # each customer's id, else their e-mail
    customers: int
    amount_at_risk: dict[str, int]  # minor units per currency, each payment once
    first_payment_at: datetime | None
    last_payment_at: datetime | None
    recoverable: int  # findings an activation repair can resolve (RECOVERABLE_KINDS)
    recoverable_ids: tuple[str, ...]  # their finding ids

    def to_json(self) -> dict:
        """DESIGN's object of `incidents --json`, with the first and last payment time added."""
        return {
            "id": self.id,
            "status": self.status,
            "cause": self.cause.to_json(),
            "opened_at": iso(self.opened_at),
            "last_seen": iso(self.last_seen),
            "finding_ids": list(self.finding_ids),
            "payment_ids": list(self.payment_ids),
            "customers": self.customers,
            "amount_at_risk": dict(self.amount_at_risk),
            "first_payment_at": iso(self.first_payment_at),
            "last_payment_at": iso(self.last_payment_at),
            "recoverable": self.recoverable,
        }


def incident_id(cause_key: str) -> str:
    """'inc_' and 12 hex digits derived from the cause's key."""
    return "inc_" + hashlib.sha256(cause_key.encode()).hexdigest()[:12]


# --- grouping ---------------------------------------------------------------------------------------------


def find_incidents(
    findings: Iterable[OpenFinding],
    outages: Iterable[Outage],
    *,
    now: datetime,
    failures: Mapping[str, str] | None = None,
    slack_before: timedelta = AFTER_PAYMENT,
    slack_after: timedelta = BEFORE_PAYMENT,
    ignore_components: Collection[str] = MONITOR_COMPONENTS,
) -> list[Incident]:
    """The open incidents of these open findings; see the module docstring for the rules.

    Sorted: outages (ongoing before ended, down before degraded), endpoint, app_error, unknown; each by
    opened_at, then the cause's start, then id."""
    now, failures = to_utc(now), failures or {}
    items = _unique(findings)
    related = _Related(items)
    groups: list[tuple[Cause, list[OpenFinding]]] = []

    for o in outages:
        if o.component in ignore_components:
            continue
        lo, hi = to_utc(o.start) - slack_before, to_utc(o.end or now) + slack_after
        hit = [f for f in items if f.finding.kind != "endpoint_misconfigured" and lo <= f.time <= hi]
        cause = Cause(
            OUTAGE, f"{OUTAGE}:{o.component}:{iso(o.start)}", o.component, o.error, o.start, o.end, o.status
        )
        groups.append((cause, related.expand(hit)))

    webhook = [f for f in items if f.finding.kind in ENDPOINT_KINDS]
    for e in (f for f in items if f.finding.kind == "endpoint_misconfigured"):
        members = related.expand([e, *webhook])
        start = min(f.time for f in members)
        groups.append(
            (Cause(ENDPOINT, f"{ENDPOINT}:{e.id}", ENDPOINT_COMPONENT, e.finding.hint, start, None), members)
        )

    by_signature: dict[str, list[OpenFinding]] = {}
    for f in items:
        error = failures.get(f.finding.event_id or "")
        if f.finding.kind == "webhook_failed" and error is not None:
            by_signature.setdefault(signature(error), []).append(f)
    for sig, failed in by_signature.items():
        failed.sort(key=lambda f: (f.time, f.id))
        detail = error_line(failures[failed[0].finding.event_id])
        cause = Cause(APP_ERROR, f"{APP_ERROR}:{sig}", None, detail, failed[0].time, failed[-1].time)
        groups.append((cause, related.expand(failed)))

    groups = [(c, m) for c, m in groups if m]
    placed = {f.id for _, members in groups for f in members}
    rest = [f for f in items if f.id not in placed]
    if rest:
        groups.append((Cause(UNKNOWN, UNKNOWN, None, NO_CAUSE, None, None), rest))

    incidents = [_incident(cause, members, related) for cause, members in groups]
    incidents.sort(key=_order)
    return incidents


def _unique(findings: Iterable[OpenFinding]) -> list[OpenFinding]:
    """One per id, the first wins, in input order."""
    seen: set[str] = set()
    out = []
    for f in findings:
        if f.id not in seen:
            seen.add(f.id)
            out.append(f)
    return out


class _Related:
    """The findings of each payment and event, and who each customer is."""

    def __init__(self, items: list[OpenFinding]):
        self.items = items
        self.by_payment: dict[str, list[OpenFinding]] = {}
        self.by_event: dict[str, list[OpenFinding]] = {}
        self.customer_of_payment: dict[str, str] = {}
        self.customer_of_email: dict[str, str] = {}
        for f in items:
            x = f.finding
            if x.payment_id:
                self.by_payment.setdefault(x.payment_id, []).append(f)
            if x.event_id:
                self.by_event.setdefault(x.event_id, []).append(f)
            if x.customer_id:
                if x.payment_id:
                    self.customer_of_payment.setdefault(x.payment_id, x.customer_id)
                if x.customer_email:
                    self.customer_of_email.setdefault(x.customer_email.lower(), x.customer_id)

    def expand(self, seed: Iterable[OpenFinding]) -> list[OpenFinding]:
        """The seed and every finding of the same payments and events, in input order."""
        ids = set()
        for f in seed:
            ids.add(f.id)
            ids.update(other.id for other in self.by_payment.get(f.finding.payment_id or "", []))
            ids.update(other.id for other in self.by_event.get(f.finding.event_id or "", []))
        return [f for f in self.items if f.id in ids]

    def customer(self, f: OpenFinding) -> str | None:
        """The customer's id, from this finding or another about the same payment or e-mail, else their
        e-mail (lower case), else None."""
        x = f.finding
        email = (x.customer_email or "").lower()
        return (
            x.customer_id
            or self.customer_of_payment.get(x.payment_id or "")
            or self.customer_of_email.get(email)
            or email
            or None
        )


def _incident(cause: Cause, members: list[OpenFinding], related: _Related) -> Incident:
    paid_at: dict[str, datetime] = {}
    at_risk: dict[str, dict] = {}  # one finding per payment (or per finding without one)
    for f in members:
        x = f.finding
        if x.payment_id:
            paid_at[x.payment_id] = min(paid_at.get(x.payment_id, f.time), f.time)
        if x.kind in AT_RISK_KINDS:
            at_risk.setdefault(
                x.payment_id or f.id, {"kind": x.kind, "amount": x.amount, "currency": x.currency}
            )
    customers = sorted({c for f in members if (c := related.customer(f))})
    recoverable = sorted(f.id for f in members if f.finding.kind in RECOVERABLE_KINDS)
    return Incident(
        id=incident_id(cause.key),
        status=OPEN,
        cause=cause,
        opened_at=min(to_utc(f.first_seen) for f in members),
        last_seen=max(f.seen for f in members),
        finding_ids=tuple(sorted(f.id for f in members)),
        payment_ids=tuple(sorted(paid_at)),
        customer_keys=tuple(customers),
        customers=len(customers),
        amount_at_risk=amount_at_risk(at_risk.values()),
        first_payment_at=min(paid_at.values(), default=None),
        last_payment_at=max(paid_at.values(), default=None),
        recoverable=len(recoverable),
        recoverable_ids=tuple(recoverable),
    )


def _order(i: Incident) -> tuple:
    c = i.cause
    ongoing_first = 0 if c.kind == OUTAGE and c.end is None else 1
    down_first = 0 if c.status == DOWN else 1
    return (CAUSE_KINDS.index(c.kind), ongoing_first, down_first, i.opened_at, c.start or i.opened_at, i.id)
