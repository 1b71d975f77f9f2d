"""The Finance screen: payments against activations per day, week or month and currency, and the two
kinds of findings where access outlives the money (refunded but active, active without payment)."""

from __future__ import annotations

from datetime import date, datetime, timedelta

import pandas as pd
from sqlalchemy import BigInteger, Connection, Engine, String, case, column, func, select, table, true

from monitor.rules.findings import AT_RISK_KINDS
from monitor.rules.reconcile import SCOPES
from monitor.store.models import FindingRow, UnmatchedPayment
from monitor.views.common import epoch, frame, loads, nullable_int
from monitor.views.discrepancies import CURRENT

PERIODS = ("day", "week", "month")
PRESETS = ("Last month", "This month", "Last 30 days")  # the date ranges Finance offers in one click
PARITY_COLUMNS = (
    "period_start",
    "currency",
    "payments",
    "activated_payments",
    "matched_payments",
    "paid_amount",
    "activated_amount",
    "at_risk_amount",
    "parity_pct",
)
TOTAL_COLUMNS = PARITY_COLUMNS[1:]
ISSUE_COLUMNS = (
    "payment_id",
    "customer_email",
    "amount",
    "currency",
    "occurred_at",
    "first_seen",
    "hint",
    "id",
    "status",
)
_f = FindingRow.__table__
_u = UnmatchedPayment.__table__
_payments = table(
    "payments",
    column("payment_id", String),
    column("created", BigInteger),
    column("amount", BigInteger),
    column("currency", String),
    column("stripe_subscription_id", String),
)


def preset_range(name: str, day: date) -> tuple[date, date]:
    """The dates of a preset (PRESETS), as of `day` (UTC), both inclusive: the whole calendar month before
    this one, this month so far, the last 30 days (any other name)."""
    if name == "Last month":
        last = day.replace(day=1) - timedelta(days=1)
        return last.replace(day=1), last
    if name == "This month":
        return day.replace(day=1), day
    return day - timedelta(days=29), day


def _has_finding(p, kinds: tuple[str, ...], label: str):
    """Whether the payment `p` has an open or acknowledged finding of `kinds`, as a labelled column."""
    mine = select(_f.c.id).where(
        _f.c.payment_id == p.c.payment_id, _f.c.status.in_(CURRENT), _f.c.kind.in_(kinds)
    )
    return mine.exists().label(label)


def _per_day(conn: Connection, since: datetime, until: datetime, scope: str) -> pd.DataFrame:
    """Payments created in [since, until] (of a Stripe subscription only, with scope `subscriptions`) by UTC
    day and currency: counts and sums, in SQL."""
    p = _payments
    counted = [p.c.created >= epoch(since), p.c.created <= epoch(until)]
    if scope == "subscriptions":
        counted.append(func.coalesce(p.c.stripe_subscription_id, "") != "")
    # Per payment an EXISTS through the findings' payment_id index: a join to the set of at-risk payments
    # makes SQLite scan that set once per payment.
    at_risk = _has_finding(p, AT_RISK_KINDS, "at_risk")
    # Parity is the reconcile's (PARITY_DEFINITION): the payments it counted as not matching, by primary key.
    mismatched = select(_u.c.payment_id).where(_u.c.payment_id == p.c.payment_id).exists().label("mismatched")
    inner = (
        select(
            (p.c.created // 86400).label("day"),
            func.lower(p.c.currency).label("currency"),
            func.coalesce(p.c.amount, 0).label("amount"),
            at_risk,
            mismatched,
        )
        .where(*counted)
        .subquery()
    )
    risky = inner.c.at_risk == true()
    rows = conn.execute(
        select(
            inner.c.day,
            inner.c.currency,
            func.count().label("payments"),
            func.sum(case((risky, 0), else_=1)).label("activated_payments"),
            func.sum(inner.c.amount).label("paid_amount"),
            func.sum(case((risky, inner.c.amount), else_=0)).label("at_risk_amount"),
            func.sum(case((inner.c.mismatched == true(), 0), else_=1)).label("matched_payments"),
        ).group_by(inner.c.day, inner.c.currency)
    ).all()
    names = (
        "day",
        "currency",
        "payments",
        "activated_payments",
        "paid_amount",
        "at_risk_amount",
        "matched_payments",
    )
    df = frame(rows, names)
    for c in names[:1] + names[2:]:
        df[c] = pd.to_numeric(df[c]).astype("int64")
    return df


def _period_start(days: pd.Series, period: str) -> pd.Series:
    if period == "week":  # ISO weeks, from Monday: day 0 (1970-01-01) was a Thursday
        days = days - (days + 3) % 7
    start = pd.to_datetime(days * 86400, unit="s", utc=True)
    if period == "month":
        start = start.dt.tz_localize(None).dt.to_period("M").dt.start_time.dt.tz_localize("UTC")
    return start


def _with_parity(df: pd.DataFrame) -> pd.DataFrame:
    df = df.assign(activated_amount=df["paid_amount"] - df["at_risk_amount"])
    pct = (100 * df["matched_payments"] / df["payments"].where(df["payments"] > 0)).round(1)
    return df.assign(parity_pct=pct.astype("float64"))


def _issues(
    conn: Connection, kind: str, limit: int, since: datetime, until: datetime
) -> tuple[pd.DataFrame, dict[str, int], int]:
    # The range is the finding's occurred_at: the payment's time (refunded_but_active), or the app row's
    # creation (active_without_payment), the same time the range picks payments by.
    where = (
        _f.c.kind == kind,
        _f.c.status.in_(CURRENT),
        _f.c.occurred_at >= since,
        _f.c.occurred_at <= until,
    )
    # The newest ids first, then their rows: sorting narrow rows, not their payloads.
    ids = conn.execute(
        select(_f.c.id).where(*where).order_by(_f.c.first_seen.desc(), _f.c.id.desc()).limit(limit)
    ).scalars()
    position = {finding_id: i for i, finding_id in enumerate(ids)}
    found = conn.execute(
        select(
            _f.c.payment_id,
            _f.c.customer_email,
            _f.c.amount,
            _f.c.currency,
            _f.c.occurred_at,
            _f.c.first_seen,
            _f.c.payload,
            _f.c.id,
            _f.c.status,
        ).where(_f.c.id.in_(list(position)))
    ).all()
    rows = sorted(found, key=lambda r: position[r.id])
    df = frame(
        [(*r[:6], loads(r.payload, {}).get("hint", ""), r.id, r.status) for r in rows],
        ISSUE_COLUMNS,
        times=("occurred_at", "first_seen"),
    )
    totals = conn.execute(
        select(_f.c.currency, func.sum(_f.c.amount), func.count()).where(*where).group_by(_f.c.currency)
    ).all()
    money = {
        c: int(amount) for c, amount, _ in sorted(totals, key=lambda t: str(t[0])) if c and amount is not None
    }
    return nullable_int(df, "amount"), money, sum(n for _, _, n in totals)


def finance(
    engine: Engine, *, period: str, since: datetime, until: datetime, scope: str = "all", limit: int = 1000
) -> dict:
    """Everything for [since, until] (both inclusive, UTC): {"parity": PARITY_COLUMNS per period and
    currency, oldest first, for payments created in the range (weeks start on Monday), "totals":
    TOTAL_COLUMNS per currency over the whole range, "refunded_but_active" and "active_without_payment":
    ISSUE_COLUMNS of the open and acknowledged findings of that kind that occurred in the range (the
    newest `limit`), "refunded_but_active_totals" and "active_without_payment_totals": {currency: minor
    units} over all of those, "refunded_but_active_count" and "active_without_payment_count": how many}.

    A payment counts as activated unless an open or acknowledged paid_without_subscription or
    subscription_not_active finding is about it (an acknowledgement gives the customer nothing); parity is
    PARITY_DEFINITION as the latest reconcile counted it: a payment matches unless that reconcile listed it
    in `unmatched_payments` (one it has not judged yet, synced since, matches).
    `scope` is PAYMENT_SCOPE: with `subscriptions` only payments of a Stripe subscription count, as in
    reconcile's summary."""
    if period not in PERIODS:
        raise ValueError(f"period must be one of {', '.join(PERIODS)}, not {period!r}")
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {', '.join(SCOPES)}, not {scope!r}")
    with engine.connect() as conn:
        days = _per_day(conn, since, until, scope)
        refunded, refunded_totals, refunded_count = _issues(conn, "refunded_but_active", limit, since, until)
        orphans, orphan_totals, orphan_count = _issues(conn, "active_without_payment", limit, since, until)
    sums = ["payments", "activated_payments", "paid_amount", "at_risk_amount", "matched_payments"]
    by_period = (
        days.assign(period_start=_period_start(days["day"], period))
        .groupby(["period_start", "currency"], as_index=False)[sums]
        .sum()
        .sort_values(["period_start", "currency"])
    )
    totals = days.groupby("currency", as_index=False)[sums].sum().sort_values("currency")
    return {
        "parity": _with_parity(by_period)[list(PARITY_COLUMNS)].reset_index(drop=True),
        "totals": _with_parity(totals)[list(TOTAL_COLUMNS)].reset_index(drop=True),
        "refunded_but_active": refunded,
        "refunded_but_active_totals": refunded_totals,
        "refunded_but_active_count": refunded_count,
        "active_without_payment": orphans,
        "active_without_payment_totals": orphan_totals,
        "active_without_payment_count": orphan_count,
    }
