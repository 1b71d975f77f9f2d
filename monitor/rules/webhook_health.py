"""Webhook delivery health: the endpoint audit and the webhook finding kinds. Pure; `now` passed in.

Contract (DESIGN.md "Finding kinds", "Lessons from the field": webhooks are retried for up to 3 days in
live mode and events are listed for 30 days). The choices made where the rules leave room are marked
*interpretation*.

Inputs. `events`: id, type, created, pending_webhooks, object_id, object_type, livemode (Stripe's events as
synced). `webhook_log`: the app's own log, event_id, type, received_at, processed_at, status, error, possibly
several rows per event (retries); None when the app keeps no log, and then webhook_failed and
webhook_missing are not evaluated. `endpoints`: Stripe's webhook endpoints as dicts. `payments`: the frame of
`monitor.rules.reconcile.PAYMENT_COLUMNS`, used to name the payment an event is about.

Kinds.
- webhook_undelivered: an event of PAYMENT_EVENT_TYPES with pending_webhooks > 0, older than grace (strictly).
- webhook_failed: the latest log row of an event id (by received_at; on a tie a success counts as later)
  has a status outside `ok_statuses`. Judged for events of PAYMENT_EVENT_TYPES, and for log rows of events
  not in `events` by the log's own type. *Interpretation*: a non-ok row without error text received within
  the grace period is taken as still being processed, not as a failure.
- webhook_missing: an event of PAYMENT_EVENT_TYPES older than grace that Stripe reports delivered
  (pending_webhooks == 0), whose type an enabled endpoint of the event's mode receives (the app only ever
  logs what its endpoint receives), and of which the app's log has no row: delivered elsewhere.
- endpoint_misconfigured: the audit below is not ok while EXPECTED_WEBHOOK_URL is configured; one finding.

The payment an event is about: the payment whose payment_id, checkout_session_id, invoice_id or
payment_intent_id (in that order) equals the event's object_id, else the payment whose event_id is the
event. Hints never wrap a URL in quotes or brackets and never put punctuation right after one, so a URL is
always followed by a space or the end of the text (outside checks extract URLs from hints).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from monitor.rules.findings import WEBHOOK_KINDS, Finding
from monitor.rules.matching import joint_codes as _joint_codes
from monitor.rules.matching import plain as _plain
from monitor.rules.money import format_money
from monitor.rules.outages import format_time
from monitor.rules.timefmt import format_duration, quote, to_utc

REQUIRED_EVENT_TYPES: tuple[str, ...] = (
    "checkout.session.completed",
    "invoice.paid",
    "invoice.payment_failed",
    "charge.refunded",
    "charge.dispute.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
)
PAYMENT_EVENT_TYPES: tuple[str, ...] = REQUIRED_EVENT_TYPES + (
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "invoice.payment_succeeded",
    "payment_intent.succeeded",
    "charge.dispute.closed",
    "customer.subscription.created",
)
# https://docs.stripe.com/webhooks#retries: live mode retries for up to three days; test mode three times
# over a few hours. https://docs.stripe.com/api/events: events are listed for 30 days.
LIVE_RETRY = timedelta(days=3)
EVENTS_WINDOW = timedelta(days=30)
TEST_MODE_RETRIES = "test mode: Stripe retries only a few times over a few hours"
EXPECTED_SETTING = "EXPECTED_WEBHOOK_URL"

EVENT_COLUMNS: tuple[str, ...] = (
    "id",
    "type",
    "created",
    "pending_webhooks",
    "object_id",
    "object_type",
    "livemode",
)
LOG_COLUMNS: tuple[str, ...] = ("event_id", "type", "received_at", "processed_at", "status", "error")
_REQUIRED_EVENT_COLUMNS = ("id", "type", "created", "pending_webhooks")
_REQUIRED_LOG_COLUMNS = ("event_id", "received_at", "status")
# The payment columns an event's object id is looked up in, in order of preference.
_OBJECT_KEYS = ("payment_id", "checkout_session_id", "invoice_id", "payment_intent_id")
_PAYMENT_FIELDS = (
    "payment_id",
    "payment_intent_id",
    "customer_id",
    "customer_email",
    "amount",
    "currency",
    "created",
    "event_id",
)
_URL = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/?#]*)([^?#]*)(.*)$")
_DEFAULT_PORTS = {"https": ":443", "http": ":80"}


# --- formatting -----------------------------------------------------------------------------------------


def normalize_url(url: str | None) -> str:
    """The URL with scheme and host in lower case, a default port and trailing slashes dropped."""
    text = (url or "").strip()
    m = _URL.match(text)
    if not m:
        return text.rstrip("/")
    scheme, host, path, rest = m.groups()
    scheme, host = scheme.lower(), host.lower()
    port = _DEFAULT_PORTS.get(scheme)
    if port and host.endswith(port):
        host = host[: -len(port)]
    return f"{scheme}://{host}{path.rstrip('/')}{rest}"


def _urls(urls: Iterable[str]) -> str:
    """URLs joined by ' and ': a comma right after a URL would be read as part of it."""
    return " and ".join(urls)


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


# --- the endpoint audit ---------------------------------------------------------------------------------


@dataclass
class EndpointAudit:
    configured: bool  # EXPECTED_WEBHOOK_URL set?
    ok: bool  # an enabled endpoint at the expected URL receives every required type (or "*"), in the key's mode
    expected_url: str | None
    endpoints: list[dict]  # id, url, status, livemode, enabled_events, missing_types, at_expected_url
    problems: list[str]  # one readable sentence each
    summary: str  # one line for a status strip

    @property
    def delivered_elsewhere(self) -> list[str]:
        """The URLs of the enabled endpoints Stripe delivers to that are not at the expected URL."""
        return [
            e["url"]
            for e in self.endpoints
            if e["status"] == "enabled" and not e["at_expected_url"] and e["url"]
        ]


def audit_endpoints(
    endpoints: list[dict], *, expected_url: str | None, livemode: bool | None
) -> EndpointAudit:
    """Whether Stripe delivers the required event types to the expected URL.

    `livemode` is the API key's mode; None (unknown, the demo) does not judge modes. Not configured: `ok` is
    False, there are no problems, and the summary says so and names where Stripe delivers."""
    expected = (expected_url or "").strip() or None
    want = normalize_url(expected) if expected else None
    listed = [_endpoint_view(e, want) for e in endpoints]
    enabled = [e for e in listed if e["status"] == "enabled"]
    delivers = _urls(f"{e['url']} (enabled)" for e in enabled)

    if expected is None:
        where = f"Stripe delivers to: {delivers}" if enabled else "no enabled webhook endpoint is registered"
        summary = f"{EXPECTED_SETTING} is not configured; {where}"
        return EndpointAudit(False, False, None, listed, [], summary)

    at = [e for e in listed if e["at_expected_url"]]
    good = [e for e in at if e["status"] == "enabled" and not e["missing_types"] and _mode_ok(e, livemode)]
    if good:
        e = good[0]
        mode = "" if e["livemode"] is None else (" (live mode)" if e["livemode"] else " (test mode)")
        receives = (
            "every event type (*)"
            if "*" in e["enabled_events"]
            else f"all {len(REQUIRED_EVENT_TYPES)} required event types"
        )
        return EndpointAudit(
            True, True, expected, listed, [], f"ok: {e['url']} is enabled{mode} and receives {receives}"
        )

    problems = []
    if not at:
        if enabled:
            elsewhere = f"Stripe delivers to {delivers} instead"
        elif listed:
            elsewhere = "Stripe delivers nowhere: " + _urls(
                f"{e['url']} is {e['status'] or 'not enabled'}" for e in listed
            )
        else:
            elsewhere = "no webhook endpoint is registered"
        problems.append(f"no endpoint at {expected} ({EXPECTED_SETTING}); {elsewhere}")
    for e in at:
        if e["status"] != "enabled":
            problems.append(f"the endpoint at {e['url']} is {e['status'] or 'not enabled'}")
        if e["missing_types"]:
            problems.append(f"the endpoint at {e['url']} does not receive {', '.join(e['missing_types'])}")
        if not _mode_ok(e, livemode):
            problems.append(
                f"the endpoint at {e['url']} is a {_mode(e['livemode'])}-mode endpoint "
                f"but the key is a {_mode(livemode)} key"
            )
    others = [e for e in enabled if not e["at_expected_url"]]
    if at and others and not any(e["status"] == "enabled" for e in at):
        problems.append(f"Stripe delivers to {_urls(e['url'] + ' (enabled)' for e in others)} instead")
    return EndpointAudit(True, False, expected, listed, problems, problems[0])


def _endpoint_view(e: dict, want: str | None) -> dict:
    events = [str(t) for t in (e.get("enabled_events") or [])]
    missing = [] if "*" in events else [t for t in REQUIRED_EVENT_TYPES if t not in events]
    live = e.get("livemode")
    return {
        "id": e.get("id"),
        "url": str(e.get("url") or ""),
        "status": str(e.get("status") or ""),
        "livemode": None if live is None else bool(live),
        "enabled_events": events,
        "missing_types": missing,
        "at_expected_url": want is not None and normalize_url(e.get("url")) == want,
    }


def _mode_ok(e: dict, livemode: bool | None) -> bool:
    return livemode is None or e["livemode"] is None or e["livemode"] == livemode


def _mode(live: bool) -> str:
    return "live" if live else "test"


# --- countdowns and delivery state -----------------------------------------------------------------------


def delivery_countdowns(
    created: datetime, *, now: datetime, livemode: bool
) -> tuple[timedelta | None, timedelta]:
    """(time left before Stripe stops retrying, None in test mode; time left before the event leaves the
    30-day Events list), both clamped at 0."""
    age = to_utc(now) - to_utc(created)
    zero = timedelta(0)
    retry = max(LIVE_RETRY - age, zero) if livemode else None
    return retry, max(EVENTS_WINDOW - age, zero)


def countdown_text(created: datetime, *, now: datetime, livemode: bool) -> str:
    retry, listed = delivery_countdowns(created, now=now, livemode=livemode)
    if retry is None:
        retrying = TEST_MODE_RETRIES
    elif retry > timedelta(0):
        retrying = f"Stripe stops retrying in {format_duration(retry)} (live mode)"
    else:
        retrying = "Stripe has stopped retrying (live mode: 3 days)"
    if listed > timedelta(0):
        return f"{retrying}; leaves the 30-day Events list in {format_duration(listed)}"
    return f"{retrying}; has left the 30-day Events list"


def delivery_state(
    event_type: str, event_id: str, pending: int, created: datetime | None, *, now: datetime
) -> str:
    """'checkout.session.completed evt_… pending at 1 endpoint for 2 h 3 min', or '… delivered'."""
    if pending > 0:
        since = f" for {format_duration(to_utc(now) - to_utc(created))}" if created is not None else ""
        return f"{event_type} {event_id} pending at {_plural(pending, 'endpoint')}{since}"
    return f"{event_type} {event_id} delivered"


def payment_text(pay: dict) -> str:
    """'payment cs_…: USD 149.00, dana@example.com'."""
    email = f", {pay['customer_email']}" if pay.get("customer_email") else ""
    return f"payment {pay['payment_id']}: {format_money(pay.get('amount'), pay.get('currency'))}{email}"


# --- preparing the inputs ---------------------------------------------------------------------------------


def prepare_events(events: pd.DataFrame | None) -> pd.DataFrame:
    """EVENT_COLUMNS with plain types: ids and types as text, created in UTC, pending as int, livemode as
    nullable boolean. Optional columns missing from the input are missing values."""
    if events is None:
        events = pd.DataFrame(columns=list(_REQUIRED_EVENT_COLUMNS))
    _require(events, _REQUIRED_EVENT_COLUMNS, "events")
    n = len(events)
    out = {}
    for c in EVENT_COLUMNS:
        s = events[c].reset_index(drop=True) if c in events.columns else pd.Series([None] * n, dtype="object")
        if c == "created":
            s = pd.to_datetime(s, utc=True)
        elif c == "pending_webhooks":
            s = pd.to_numeric(s).fillna(0).astype("int64")
        elif c == "livemode":
            s = s.astype("boolean")
        else:
            s = s.astype("str")
        out[c] = s
    return pd.DataFrame(out)


def prepare_log(webhook_log: pd.DataFrame) -> pd.DataFrame:
    """LOG_COLUMNS with plain types; rows without an event id dropped."""
    _require(webhook_log, _REQUIRED_LOG_COLUMNS, "webhook_log")
    n = len(webhook_log)
    out = {}
    for c in LOG_COLUMNS:
        s = (
            webhook_log[c].reset_index(drop=True)
            if c in webhook_log.columns
            else pd.Series([None] * n, dtype="object")
        )
        out[c] = pd.to_datetime(s, utc=True) if c in ("received_at", "processed_at") else s.astype("str")
    log = pd.DataFrame(out)
    return log[log["event_id"].notna() & (log["event_id"] != "")]


def latest_log_entries(
    webhook_log: pd.DataFrame, *, ok_statuses: Sequence[str], event_ids: Iterable[str] | None = None
) -> pd.DataFrame:
    """The latest log row of each event id (by received_at; on a tie a success counts as later, a missing
    received_at as earliest), indexed by event id, with `ok` (status in ok_statuses, case-insensitive) and
    `attempts` (rows logged for that event). `event_ids` limits the answer to those events."""
    log = prepare_log(webhook_log)
    if event_ids is not None:
        log = log[log["event_id"].isin(set(event_ids))]
    ok = {s.strip().lower() for s in ok_statuses}
    log = log.assign(ok=log["status"].str.strip().str.lower().isin(ok))
    attempts = log.groupby("event_id").size()
    log = log.sort_values(["event_id", "received_at", "ok"], na_position="first", kind="stable")
    latest = log.drop_duplicates("event_id", keep="last").set_index("event_id")
    return latest.assign(attempts=attempts.reindex(latest.index).astype("int64"))


def _isin(values: pd.Series, among: pd.Series) -> np.ndarray:
    """`values.isin(among)` for two long text columns (pandas' str `isin` converts `among` value by value)."""
    codes, other, n = _joint_codes(values, among)
    present = np.zeros(n + 1, dtype=bool)
    present[other] = True  # code -1 (missing) lands on the spare last slot
    present[-1] = False
    return present[codes]


def _require(frame: pd.DataFrame, columns: Sequence[str], name: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}; expected at least {list(columns)}")


def py(v):
    """A plain Python value: timestamps as UTC datetimes, every kind of missing as None, '' as None."""
    if isinstance(v, pd.Timestamp):
        return None if pd.isna(v) else v.to_pydatetime()
    v = _plain(v)
    return None if v == "" else v


class PaymentIndex:
    """The payments a few events are about, looked up once, vectorised, among all payments."""

    def __init__(self, payments: pd.DataFrame | None, object_ids: Iterable, event_ids: Iterable):
        self._by_object: dict[str, dict] = {}
        self._by_event: dict[str, dict] = {}
        if payments is None or payments.empty:
            return
        objects = {x for x in object_ids if isinstance(x, str) and x}
        events = {x for x in event_ids if isinstance(x, str) and x}
        frame = payments.reset_index(drop=True)
        hits: list[tuple[dict, str, pd.Series]] = [
            (self._by_object, key, frame[key].astype("str")) for key in _OBJECT_KEYS if key in frame.columns
        ]
        if "event_id" in frame.columns:
            hits.append((self._by_event, "event_id", frame["event_id"].astype("str")))
        found: list[tuple[dict, str, int]] = []
        for target, key, column in hits:
            wanted = events if key == "event_id" else objects
            hit = np.flatnonzero(column.isin(wanted).to_numpy())
            found += [
                (target, k, int(p)) for k, p in zip(column.iloc[hit].tolist(), hit.tolist(), strict=True)
            ]
        if not found:
            return
        positions = sorted({p for _, _, p in found})
        part = frame.iloc[positions].reindex(columns=list(_PAYMENT_FIELDS))
        records = {
            p: {c: py(v) for c, v in r.items()}
            for p, r in zip(positions, part.to_dict("records"), strict=True)
        }
        for record in records.values():
            if record["amount"] is not None:
                record["amount"] = int(record["amount"])
        for target, k, p in found:  # keys in order of preference: the first payment found wins
            target.setdefault(k, records[p])

    def find(self, object_id: str | None, event_id: str | None) -> dict | None:
        return self._by_object.get(object_id or "") or self._by_event.get(event_id or "")


# --- the findings -----------------------------------------------------------------------------------------


def webhook_findings(
    events: pd.DataFrame,
    webhook_log: pd.DataFrame | None,
    endpoints: list[dict],
    payments: pd.DataFrame | None,
    *,
    now: datetime,
    grace: timedelta,
    expected_url: str | None,
    livemode: bool | None,
    ok_statuses: Sequence[str] = ("processed",),
) -> list[Finding]:
    """The webhook findings; see the module docstring for the rules."""
    now = to_utc(now)
    ev = prepare_events(events).drop_duplicates("id")
    payment_type = ev["type"].isin(PAYMENT_EVENT_TYPES)
    due = ev["created"] < pd.Timestamp(now - grace)  # NaT compares False: never due
    undelivered = ev[payment_type & due & (ev["pending_webhooks"] > 0)]
    failed = missing = ev.iloc[:0]
    if webhook_log is not None:
        failed = _failures(ev, webhook_log, now=now, grace=grace, ok_statuses=ok_statuses)
        logged = _isin(ev["id"], prepare_log(webhook_log)["event_id"])
        delivered = ev["pending_webhooks"] == 0
        missing = ev[payment_type & due & delivered & _receivable(ev, endpoints) & ~logged]

    parts = (undelivered, failed, missing)
    index = PaymentIndex(
        payments,
        object_ids=[x for f in parts for x in f["object_id"].tolist()],
        event_ids=[x for f in parts for x in f["id"].tolist()],
    )
    out = _undelivered(undelivered, index, now=now, livemode=livemode)
    if webhook_log is not None:
        out += _failed(failed, index, now=now)
        out += _missing(missing, index, endpoints, expected_url=expected_url, now=now)
    audit = audit_endpoints(endpoints, expected_url=expected_url, livemode=livemode)
    if audit.configured and not audit.ok:
        kind = "endpoint_misconfigured"
        out.append(Finding(kind=kind, key=f"{kind}:{audit.expected_url}", hint="; ".join(audit.problems)))
    order = {k: i for i, k in enumerate(WEBHOOK_KINDS)}
    out.sort(key=lambda f: (order[f.kind], f.key))
    return out


def _failures(
    ev: pd.DataFrame,
    webhook_log: pd.DataFrame,
    *,
    now: datetime,
    grace: timedelta,
    ok_statuses: Sequence[str],
) -> pd.DataFrame:
    """The latest log rows that are failures, joined to their events: id, type (the event's, else the
    log's), created, object_id, livemode, status, error, received_at, attempts."""
    latest = latest_log_entries(webhook_log, ok_statuses=ok_statuses)
    latest = latest[~latest["ok"]]
    has_error = latest["error"].notna() & (latest["error"].str.strip() != "")
    settled = latest["received_at"].isna() | (latest["received_at"] < pd.Timestamp(now - grace))
    latest = latest[has_error | settled].rename(columns={"type": "log_type"}).reset_index()
    joined = latest.merge(ev, left_on="event_id", right_on="id", how="left")
    joined["id"] = joined["event_id"]  # events the store does not know keep their id
    joined["type"] = joined["type"].fillna(joined["log_type"])
    return joined[joined["type"].isin(PAYMENT_EVENT_TYPES)]


def _receivable(ev: pd.DataFrame, endpoints: list[dict]) -> pd.Series:
    """Whether an enabled endpoint of the event's mode receives the event's type."""
    mask = pd.Series(False, index=ev.index)
    for e in endpoints:
        if str(e.get("status") or "") != "enabled":
            continue
        types = [str(t) for t in (e.get("enabled_events") or [])]
        takes = pd.Series(True, index=ev.index) if "*" in types else ev["type"].isin(types)
        if e.get("livemode") is not None:
            takes &= (ev["livemode"] == bool(e["livemode"])).fillna(True).astype(bool)
        mask |= takes
    return mask


def _events_of(frame: pd.DataFrame) -> Iterable[dict]:
    for record in frame.to_dict("records"):
        yield {k: py(v) for k, v in record.items()}


def _finding(kind: str, e: dict, hint: str, pay: dict | None) -> Finding:
    pay = pay or {}
    return Finding(
        kind=kind,
        key=f"{kind}:{e['id']}",
        payment_id=pay.get("payment_id"),
        payment_intent_id=pay.get("payment_intent_id"),
        customer_id=pay.get("customer_id"),
        customer_email=pay.get("customer_email"),
        amount=pay.get("amount"),
        currency=pay.get("currency"),
        event_id=e["id"],
        hint=hint,
        occurred_at=e.get("created") or e.get("received_at"),
    )


def _with_payment(hint: str, pay: dict | None) -> str:
    return f"{hint}; {payment_text(pay)}" if pay else hint


def _undelivered(
    frame: pd.DataFrame, index: PaymentIndex, *, now: datetime, livemode: bool | None
) -> list[Finding]:
    out = []
    for e in _events_of(frame):
        live = e["livemode"] if e["livemode"] is not None else bool(livemode)
        state = delivery_state(e["type"], e["id"], e["pending_webhooks"], e["created"], now=now)
        hint = f"{state}; {countdown_text(e['created'], now=now, livemode=live)}"
        pay = index.find(e["object_id"], e["id"])
        out.append(_finding("webhook_undelivered", e, _with_payment(hint, pay), pay))
    return out


def _failed(frame: pd.DataFrame, index: PaymentIndex, *, now: datetime) -> list[Finding]:
    out = []
    for e in _events_of(frame):
        when = f" at {format_time(e['received_at'], now=now)}" if e["received_at"] else ""
        said = f": {quote(e['error'])}" if e["error"] else " (no error text)"
        tries = f" ({e['attempts']} attempts logged)" if e["attempts"] > 1 else ""
        hint = f"{e['type']} {e['id']}; app log: {e['status']}{when}{said}{tries}"
        pay = index.find(e["object_id"], e["id"])
        out.append(_finding("webhook_failed", e, _with_payment(hint, pay), pay))
    return out


def _missing(
    frame: pd.DataFrame,
    index: PaymentIndex,
    endpoints: list[dict],
    *,
    expected_url: str | None,
    now: datetime,
) -> list[Finding]:
    out = []
    want = normalize_url(expected_url) if expected_url else None
    for e in _events_of(frame):
        to = [
            str(ep.get("url") or "")
            for ep in endpoints
            if str(ep.get("status") or "") == "enabled"
            and ({"*", e["type"]} & set(ep.get("enabled_events") or []))
            and (ep.get("livemode") is None or e["livemode"] is None or bool(ep["livemode"]) == e["livemode"])
        ]
        where = f"Stripe delivers {e['type']} to {_urls(to)}"
        if want and any(normalize_url(u) == want for u in to):
            where += f" ({EXPECTED_SETTING})"
        elif expected_url:
            where += f" while {EXPECTED_SETTING} is {expected_url}"
        hint = (
            f"{e['type']} {e['id']} of {format_time(e['created'], now=now)} is delivered according to Stripe, "
            "but the app's webhook log has no record of it"
        )
        pay = index.find(e["object_id"], e["id"])
        out.append(_finding("webhook_missing", e, f"{_with_payment(hint, pay)}; {where}", pay))
    return out
