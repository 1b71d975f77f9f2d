"""Alerts through apprise (`ALERT_URLS`): a critical finding opens, a component goes down, it recovers.

What is due is read from the store each time `send_due_alerts` runs (after every scheduled sync and probe
run), so the rules are simple to state:
- a critical finding in status `open` is alerted once per finding id (key `finding:<id>`); acknowledged
  findings are not alerted; a finding that is resolved gives its key back, so it alerts again if it reopens;
- a component whose probes show an ongoing outage (monitor.rules.outages) that reached `down` is alerted once
  per outage (key `outage:<component>@<start>`), and not again while an alerted outage of it is unrecovered
  (the `scheduler` component excepted: the jobs process that sends alerts cannot report its own absence);
- an alerted outage is followed by one recovery alert (key `recovery:<component>@<start>`) at the first
  `up` probe after its start.

Exactly once, across threads and processes: a key is claimed by inserting it into `alerts_sent` (its
primary key arbitrates) before anything is sent; only the claimant sends. More than DIGEST_AFTER alerts due
at once go out as one digest message. Past ALERTS_PER_HOUR messages to a target in the last hour, a
delivery is recorded as `capped` and not sent. Every delivery, to every target, is a row in
`alert_deliveries` with its status (sent | failed | capped | not_sent), apprise's error text and duration.
A claimed alert whose delivery failed is not retried: the row shows it, and the dashboard shows the row.

No secret in an alert: every text passes through `Config.mask`, and targets are shown in apprise's privacy
form without their query string.

Customer- and Stripe-supplied text (e-mails, ids, hints, error texts) is data, never markup: an
alert is built as `Text`, the monitor's words and `Data` fields apart. When it is sent, each field is made one
line, capped and escaped for the target's markup (monitor.rules.alert_text, chosen by the URL's scheme:
`markup_for`); the body goes to apprise as plain text (`NotifyFormat.TEXT`), so apprise escapes it for HTML
e-mail and Slack itself; the whole message is capped to what every target accepts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

import apprise
from sqlalchemy import Connection, Engine, delete, func, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from monitor import store
from monitor.clock import now_exact
from monitor.config import Config, ConfigError
from monitor.rules.alert_text import (
    HINT_CAP,
    MARKUPS,
    MESSAGE_CAP,
    NAME_CAP,
    TITLE_CAP,
    Data,
    Text,
    as_text,
    cap,
    cap_message,
    plain_data,
    render,
)
from monitor.rules.findings import CRITICAL, KINDS
from monitor.rules.money import format_money
from monitor.rules.outages import DOWN, Outage, format_time, outage_windows
from monitor.rules.timefmt import format_duration, iso
from monitor.secrets import mask_secrets
from monitor.store import lifecycle
from monitor.store.models import AlertDelivery, AlertSent, FindingRow, ProbeResultRow

FINDING, OUTAGE, RECOVERY = "finding", "outage", "recovery"
SENT, FAILED, CAPPED, NOT_SENT = "sent", "failed", "capped", "not_sent"
DIGEST_AFTER = 3  # more alerts than this due at once go out as one digest
OUTAGE_LOOKBACK = timedelta(hours=6)  # probe history read for ongoing outages
SEND_TIMEOUT_S = 20  # apprise's limit for one notify() call (its plugins add their own socket timeouts)
CAP_WINDOW = timedelta(hours=1)
REPAIRABLE = ("paid_without_subscription", "subscription_not_active")
# The scheduler component is the process that sends these alerts: while it runs it is up, and when it is
# down nothing here runs. Watch it from outside (`python -m monitor check` exits 2 when it is down).
NOT_ALERTED = frozenset({"scheduler"})

log = logging.getLogger(__name__)
# One evaluation at a time in a process: the sync and probe jobs may finish together, and a burst must
# become one digest under one count of the hourly cap. Across processes the claims arbitrate.
_evaluation = threading.Lock()


@dataclass(frozen=True)
class Alert:
    key: str
    kind: str  # finding | outage | recovery
    title: Text | str
    message: Text | str
    summary: Text | str  # the one line a digest shows for it

    @property
    def notify_type(self) -> str:
        return apprise.NotifyType.SUCCESS if self.kind == RECOVERY else apprise.NotifyType.FAILURE


@dataclass(frozen=True)
class Message:
    """What is sent: one alert, or a digest of several."""

    keys: tuple[str, ...]
    title: Text | str
    body: Text | str
    notify_type: str


@dataclass(frozen=True)
class Delivery:
    target: str
    status: str
    error: str | None
    duration_ms: float | None


# --- what is due ------------------------------------------------------------------------------


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).isoformat()


def outage_key(component: str, start: datetime) -> str:
    return f"{OUTAGE}:{component}@{_iso(start)}"


def recovery_key(component: str, start: datetime) -> str:
    return f"{RECOVERY}:{component}@{_iso(start)}"


def _parse_outage_key(key: str) -> tuple[str, datetime]:
    component, _, start = key.removeprefix(f"{OUTAGE}:").rpartition("@")
    return component, datetime.fromisoformat(start)


def release_resolved(conn: Connection) -> int:
    """Give back the keys of alerted findings that are resolved (or gone), so a reopened finding alerts
    again. Returns how many were released."""
    prefix = f"{FINDING}:"
    keys = conn.execute(select(AlertSent.key).where(AlertSent.kind == FINDING)).scalars().all()
    if not keys:
        return 0
    ids = [k.removeprefix(prefix) for k in keys]
    alive = set(
        conn.execute(
            select(FindingRow.id).where(FindingRow.id.in_(ids), FindingRow.status != lifecycle.RESOLVED)
        ).scalars()
    )
    gone = [prefix + i for i in ids if i not in alive]
    if gone:
        conn.execute(delete(AlertSent).where(AlertSent.key.in_(gone)))
    return len(gone)


def due_alerts(conn: Connection, config: Config, *, now: datetime) -> list[Alert]:
    """Every alert whose key has not been claimed yet: new critical findings, components down, recoveries."""
    claimed = set(conn.execute(select(AlertSent.key)).scalars())
    due: list[Alert] = []
    for f in lifecycle.current_findings(conn, statuses=(lifecycle.OPEN,)):
        if f.severity == CRITICAL and f"{FINDING}:{f.id}" not in claimed:
            due.append(finding_alert(f, config))

    unrecovered = [
        _parse_outage_key(k)
        for k in claimed
        if k.startswith(f"{OUTAGE}:") and RECOVERY + k.removeprefix(OUTAGE) not in claimed
    ]
    still_down = set()
    for component, start in sorted(unrecovered, key=lambda cs: cs[1]):
        back = _first_up_after(conn, component, start)
        if back is None:
            still_down.add(component)
        else:
            due.append(recovery_alert(component, start, back, config, now=now))

    history = store.probe_history(conn, since=now - OUTAGE_LOOKBACK)
    for outage in outage_windows(history):
        ongoing = outage.end is None and outage.status == DOWN and outage.component not in still_down
        ongoing = ongoing and outage.component not in NOT_ALERTED
        if ongoing and outage_key(outage.component, outage.start) not in claimed:
            due.append(outage_alert(outage, config, now=now))
    return due


def _first_up_after(conn: Connection, component: str, start: datetime) -> tuple[datetime, str] | None:
    t = ProbeResultRow.__table__
    row = conn.execute(
        select(t.c.checked_at, t.c.detail)
        .where(t.c.component == component, t.c.status == "up", t.c.checked_at > start)
        .order_by(t.c.checked_at)
        .limit(1)
    ).first()
    return None if row is None else (row.checked_at, row.detail)


# --- what an alert says -----------------------------------------------------------------------


def _money(f: lifecycle.StoredFinding) -> str:
    return format_money(f.amount, f.currency) if f.amount is not None and f.currency else ""


def _masked(config: Config, parts: list) -> Text:
    """Secrets masked in the words and in each field's whole value, before a cap could cut one apart."""
    return tuple(Data(config.mask(p.value), p.cap) if isinstance(p, Data) else config.mask(p) for p in parts)


def _lines(lines: list[list]) -> list:
    return [part for i, line in enumerate(lines) for part in ([] if i == 0 else ["\n"]) + line]


def finding_alert(f: lifecycle.StoredFinding, config: Config) -> Alert:
    """'CRITICAL: paid_without_subscription dana@… USD 149.00': what broke, for whom, how much, and why."""
    who = f.customer_email or f.customer_id or ""
    money = _money(f)
    head: list = [f.kind]
    head += [" ", Data(who, NAME_CAP)] if who else []
    head += [" ", Data(money, NAME_CAP)] if money else []
    lines: list[list] = [[f"{f.kind} (critical): {KINDS[f.kind][1]}."]]
    if who:
        extra = [" (", Data(f.customer_id, NAME_CAP), ")"] if f.customer_id and f.customer_id != who else []
        lines.append(["Customer: ", Data(who, NAME_CAP), *extra])
    if money:
        lines.append(["Amount: ", Data(money, NAME_CAP)])
    if f.payment_id:
        extra = [" / ", Data(f.payment_intent_id, NAME_CAP)] if f.payment_intent_id else []
        lines.append(["Payment: ", Data(f.payment_id, NAME_CAP), *extra])
    if f.subscription_ids:
        lines.append(["Subscription rows: ", Data(", ".join(str(s) for s in f.subscription_ids))])
    if f.event_id:
        lines.append(["Stripe event: ", Data(f.event_id, NAME_CAP)])
    if f.hint:
        lines.append(["Root cause: ", Data(f.hint, HINT_CAP)])
    if f.kind in REPAIRABLE and f.payment_id:
        lines.append(
            [
                "Fix: Activate on the dashboard's customer page, or `python -m monitor repair ",
                Data(f.payment_id, NAME_CAP),
                " --operator YOU --dry-run` first.",
            ]
        )
    lines.append([f"Finding {f.id}, first seen {iso(f.first_seen) or '?'}."])
    summary = head + ([": ", Data(_first_sentence(f.hint))] if f.hint else [])
    return Alert(
        key=f"{FINDING}:{f.id}",
        kind=FINDING,
        title=_masked(config, ["CRITICAL: ", *head]),
        message=_masked(config, _lines(lines)),
        summary=_masked(config, summary),
    )


def outage_alert(outage: Outage, config: Config, *, now: datetime) -> Alert:
    since = format_time(outage.start, now=now)
    error = Data(outage.error) if outage.error else "(no error text)"
    return Alert(
        key=outage_key(outage.component, outage.start),
        kind=OUTAGE,
        title=_masked(config, [f"DOWN: {outage.component}"]),
        message=_masked(
            config,
            [
                f"{outage.component} is down since {since}.\nError: ",
                error,
                "\nPayments made while it is down may be left without their subscription: the monitor will "
                "report each one as a finding.",
            ],
        ),
        summary=_masked(config, [f"{outage.component} down since {since}: ", error]),
    )


def recovery_alert(
    component: str, start: datetime, back: tuple[datetime, str], config: Config, *, now: datetime
) -> Alert:
    end, detail = back
    took = format_duration(end - start)
    return Alert(
        key=recovery_key(component, start),
        kind=RECOVERY,
        title=_masked(config, [f"RECOVERED: {component}"]),
        message=_masked(
            config,
            [
                f"{component} is up again since {format_time(end, now=now)}, after {took} down "
                f"(since {format_time(start, now=now)}).\nNow: ",
                Data(detail or ""),
            ],
        ),
        summary=_masked(config, [f"{component} up again after {took}"]),
    )


def _first_sentence(text: str, limit: int = 160) -> str:
    first = text.split("; ")[0].split(". ")[0]
    return first if len(first) <= limit else first[: limit - 1] + "…"


def digest(alerts: list[Alert]) -> Message:
    """One message listing a burst of alerts."""
    counts = {k: sum(a.kind == k for a in alerts) for k in (FINDING, OUTAGE, RECOVERY)}
    parts = [
        f"{counts[FINDING]} critical finding{'s' * (counts[FINDING] != 1)}" if counts[FINDING] else "",
        f"{counts[OUTAGE]} down" if counts[OUTAGE] else "",
        f"{counts[RECOVERY]} recovered" if counts[RECOVERY] else "",
    ]
    head = "CRITICAL" if counts[FINDING] or counts[OUTAGE] else "RECOVERED"
    title = f"{head}: {len(alerts)} alerts ({', '.join(p for p in parts if p)})"
    body: list = _lines([["- ", *as_text(a.summary)] for a in alerts])
    body.append(
        "\n\nEach finding's details, hints and repair are on the dashboard and in `python -m monitor reconcile`."
    )
    kind = apprise.NotifyType.FAILURE if head == "CRITICAL" else apprise.NotifyType.SUCCESS
    return Message(tuple(a.key for a in alerts), title, tuple(body), kind)


def messages_for(alerts: list[Alert]) -> list[Message]:
    if len(alerts) > DIGEST_AFTER:
        return [digest(alerts)]
    return [Message((a.key,), a.title, a.message, a.notify_type) for a in alerts]


def markup_for(url: str) -> Callable[[str], str]:
    """The escaping for the data in alerts to `url`, by the scheme of apprise's own form of it (so that
    `https://hooks.slack.com/services/…` is Slack too)."""
    a = _apprise(url)
    scheme = urlsplit(a[0].url(privacy=True)).scheme if a is not None else url.split("://")[0]
    return MARKUPS.get(scheme.lower(), plain_data)


# --- claiming and sending ---------------------------------------------------------------------


def claim(engine: Engine, alert: Alert, *, now: datetime) -> bool:
    """Claim an alert's key: True for exactly one caller, however many try at once."""
    t = AlertSent.__table__
    with engine.begin() as conn:
        dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
        stmt = (
            dialect.insert(t)
            .values(key=alert.key, kind=alert.kind, sent_at=now)
            .on_conflict_do_nothing(index_elements=[t.c.key])
            .returning(t.c.key)  # psycopg reports no rowcount for this INSERT
        )
        return conn.execute(stmt).first() is not None


def send_due_alerts(config: Config, engine: Engine, *, now: datetime | None = None) -> dict:
    """Claim and send every alert that is due (see the module docstring). Returns counts for the job run:
    alerts due, messages, and deliveries by status."""
    now = now or now_exact()
    with _evaluation:
        with engine.begin() as conn:
            release_resolved(conn)
        with engine.connect() as conn:
            due = due_alerts(conn, config, now=now)
        claimed = [a for a in due if claim(engine, a, now=now)]
        messages = messages_for(claimed)
        counts: dict = {"alerts": len(claimed), "messages": len(messages)}
        for message in messages:
            for d in deliver(config, engine, message, now=now):
                counts[d.status] = counts.get(d.status, 0) + 1
        return counts


def deliver(config: Config, engine: Engine, message: Message, *, now: datetime) -> list[Delivery]:
    """Send `message` to every target of ALERT_URLS (within each target's hourly cap) and record each
    delivery; without targets, record that it was not sent."""
    if not config.alert_urls:
        deliveries = [Delivery("", NOT_SENT, "ALERT_URLS is not set: recorded, not sent", None)]
    else:
        deliveries = []
        for url in config.alert_urls:
            target = target_name(url, config)
            with engine.connect() as conn:
                used = _sent_in_window(conn, target, now)
            if used >= config.alerts_per_hour:
                deliveries.append(
                    Delivery(
                        target, CAPPED, f"over the cap of {config.alerts_per_hour} alerts per hour", None
                    )
                )
                continue
            note = ""
            if used == config.alerts_per_hour - 1:
                note = (
                    f"\n\n(Alert cap reached: {config.alerts_per_hour} per hour to this target. Further alerts "
                    "this hour are recorded, not sent; the dashboard lists them.)"
                )
            markup = markup_for(url)
            title = cap(render(message.title, markup), TITLE_CAP)
            body = cap_message(render(message.body, markup), MESSAGE_CAP - len(note)) + note
            deliveries.append(_send(url, target, title, body, message.notify_type, config))
    # The row and the log get the plain text, capped like what was sent.
    title, body = cap(render(message.title), TITLE_CAP), cap_message(render(message.body))
    with engine.begin() as conn:
        conn.execute(
            insert(AlertDelivery),
            [
                {
                    "keys": json.dumps(list(message.keys)),
                    "target": d.target,
                    "title": title,
                    "message": body,
                    "status": d.status,
                    "error": d.error,
                    "duration_ms": d.duration_ms,
                    "sent_at": now,
                }
                for d in deliveries
            ],
        )
    for d in deliveries:
        if d.status == SENT:
            log.info("alert sent to %s: %s", d.target, title)
        elif d.status != NOT_SENT:
            log.warning("alert %s to %s: %s: %s", d.status, d.target, title, d.error)
    return deliveries


def _sent_in_window(conn: Connection, target: str, now: datetime) -> int:
    t = AlertDelivery.__table__
    return conn.execute(
        select(func.count()).where(
            t.c.target == target, t.c.status.in_((SENT, FAILED)), t.c.sent_at > now - CAP_WINDOW
        )
    ).scalar_one()


def _apprise(url: str) -> apprise.Apprise | None:
    a = apprise.Apprise()
    return a if a.add(url) else None


def target_name(url: str, config: Config) -> str:
    """The target as it may be shown: the scheme and host of apprise's privacy form (passwords elided),
    without path or query, where tokens of webhook URLs live: `json://alerts.example.com/…`."""
    a = _apprise(url)
    if a is None:
        return url.split("://")[0] + "://…"
    parts = urlsplit(a[0].url(privacy=True))
    shown = f"{parts.scheme}://{parts.netloc}" + ("/…" if parts.path.strip("/") else "")
    # The whole URL is a secret (Config.mask would hide it entirely); the parts shown here are not.
    return mask_secrets(shown, tuple(s for s in config.secrets if s not in config.alert_urls))


def check_targets(config: Config) -> None:
    """Raise ConfigError naming the first ALERT_URLS entry apprise does not understand."""
    for url in config.alert_urls:
        if _apprise(url) is None:
            scheme = url.split("://")[0]
            raise ConfigError(
                f"ALERT_URLS entry {scheme}://… is not valid: expected an apprise URL such as slack://…, "
                "mailto://…, workflows://… or json://host/path"
            )


def _quiet_apprise() -> None:
    """Apprise's own log is captured per call (below) and recorded on the delivery row; it is kept out of
    the process's log, which gets one line per failed delivery instead. DEBUG so that the socket error
    behind "A Connection error occurred" is captured too."""
    logger = logging.getLogger(apprise.LOGGER_NAME)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False


def _send(url: str, target: str, title: str, body: str, notify_type: str, config: Config) -> Delivery:
    a = _apprise(url)
    if a is None:
        return Delivery(target, FAILED, "apprise does not understand this URL", None)
    _quiet_apprise()
    started = time.perf_counter()
    try:
        # Plain text, declared: apprise then escapes it for each target (an e-mail's HTML part, Slack's
        # entities). Undeclared, it would pass the body through as the target's markup, HTML included.
        result = a.notify(
            body=body,
            title=title,
            notify_type=notify_type,
            body_format=apprise.NotifyFormat.TEXT,
            timeout=SEND_TIMEOUT_S,
            log_level=logging.DEBUG,
        )
    except Exception as e:  # noqa: BLE001 - a plugin's own bug: recorded on the row like any failure
        return Delivery(target, FAILED, config.mask(f"{type(e).__name__}: {e}"), _ms(started))
    duration = _ms(started)
    if result:
        return Delivery(target, SENT, None, duration)
    return Delivery(target, FAILED, config.mask(_error_text(result)), duration)


def _ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def _error_text(result) -> str:
    """What apprise said about a failed delivery: its warnings and errors, and the exception behind them."""
    lines = []
    for entry in result.logs():
        level = str(entry.level).upper()
        text = " ".join(str(entry.message).split())
        wanted = level in ("WARNING", "ERROR", "CRITICAL") or "Exception" in text
        if wanted and text not in lines:
            lines.append(text)
    status = getattr(getattr(result, "status", None), "name", "FAILURE")
    return "; ".join(lines)[:2000] or f"apprise reported {status} without a reason"
