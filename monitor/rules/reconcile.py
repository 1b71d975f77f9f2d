"""Reconciliation: Stripe payments against the app's subscription rows. Pure: frames and `now` in, findings out.

This module holds the contract, the input columns and the summary; monitor.rules.matching prepares the
frames and finds the matches, and monitor.rules.payment_findings has one function per finding kind.

Contract (DESIGN.md "What counts as a payment", "Finding kinds"); the choices made where the rules leave
room are marked *interpretation*.

Matching. A payment and a row match strongly when they share a Checkout Session id, else a PaymentIntent
id, else a Stripe subscription id (missing and empty ids never match). Each (payment, row) pair is kept
once, with its strongest key. A row that shares only the customer id or the e-mail (case-insensitive) is a
weak candidate: it does not count as a match, it is only named in a `paid_without_subscription` hint.

Before matching, a row that names a Checkout Session but no Stripe subscription takes the subscription of
that session's payment, so the subscription's later invoices (renewals) match it too.

Scope. With scope `subscriptions` (PAYMENT_SCOPE), only payments of a Stripe subscription (subscription-mode
sessions, subscription invoices) need a row: paid_without_subscription and subscription_not_active judge
only those, and the summary counts only those; one-off payments still match rows and are still judged by
the kinds that compare a row with its payment.

An incomplete snapshot (`snapshot`, monitor.rules.completeness): findings that need a resource that has never
synced completely are held back, not emitted (see monitor.rules.completeness for which), and the
Reconciliation's `held_back` says which kinds and why.

Definitions.
- settled: refunded in full (`amount_refunded > 0 and amount_refunded >= amount`) or dispute `lost`.
  *Interpretation*: a zero-amount payment (trial-start or 100 %-off invoice) is not "fully refunded".
- due: `now - created > grace` (strictly older); a payment without `created` is never due.
- active: the row's status, compared case-insensitively, is one of `active_statuses`.
- matched (the summary's parity, findings.PARITY_DEFINITION): a counted payment that is not settled and has
  an active strongly matched row, or is settled and has none. *Interpretation*: judged as of `now`, so a
  payment within grace without its row yet, and one whose subscription has since been canceled, do not
  match; `Reconciliation.unmatched` lists the counted payments that do not, for Finance to count the same.
- latest payment (of a Stripe subscription, of a row): by `created`, ties broken by `payment_id`, so the
  choice does not depend on input order.

Kinds.
- paid_without_subscription: due, not settled, no strongly matched row of any status.
- subscription_not_active: due, not settled, matched rows exist and none is active; skipped when Stripe's
  subscription status is canceled/incomplete_expired, when every matched row's `current_period_end` is
  set and in the past, and for a payment matched only by Stripe subscription id that is not the latest
  payment of that subscription. *Interpretation*: a payment also matched by session or intent id is judged
  even when it is not its subscription's latest (the rule names only subscription-id-only matches).
- amount_mismatch / refunded_but_active: each active row against its latest matched payment, whatever its
  age; one finding per payment listing the rows concerned. A missing row amount or currency is not a
  mismatch. *Interpretation*: a zero-amount payment and a proration invoice (`billing_reason`
  `subscription_update`) say nothing about the plan's price, so they raise no amount_mismatch.
- period_not_extended: a due, not settled invoice with `period_end` that is the latest payment of its Stripe
  subscription, whose matched active rows end before `period_end - 1 day` or have no end; the finding
  lists those rows. *Interpretation*: a settled (refunded) invoice need not be reflected.
- duplicate_subscription: more than one active row matched to one payment by session or intent id (key
  `duplicate_subscription:{payment_id}`), or more than one active row carrying one Stripe subscription id
  (key `duplicate_subscription:sub:{sub_id}`, payment = that subscription's earliest payment if any). The
  same set of rows is reported once, by the earliest payment-level finding if there is one.
- active_without_payment: an active row created more than `grace` ago (*interpretation*: or with no
  `created_at`, which cannot be within grace), matched to no payment, not trialing (by its status or its
  Stripe subscription's), and not a weak candidate named in a paid_without_subscription hint.

Finding values are plain Python (str, int, None, datetime in UTC). Currencies are lower case. When the
payment has no customer id or e-mail, those of the rows concerned fill in (*interpretation*: support looks
customers up by e-mail). `occurred_at` is the payment's `created`; for a row-only duplicate it is the time
the last of its rows was created (when the duplicate appeared), for active_without_payment the row's.
Payment ids are expected to be unique (one row per payment); should one appear twice, each finding
about it is reported once, so finding keys stay unique. Row statuses and currencies are compared
case-insensitively; Stripe's own values are lower case already.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from monitor.rules.completeness import HeldBack, SnapshotState
from monitor.rules.findings import PAYMENT_KINDS, Finding, amount_at_risk
from monitor.rules.matching import World, micros, prepare
from monitor.rules.payment_findings import (
    find_active_without_payment,
    find_duplicates,
    find_paid_without_subscription,
    find_period_not_extended,
    find_subscription_not_active,
    find_value_mismatches,
)

PAYMENT_COLUMNS: tuple[str, ...] = (
    "payment_id",
    "source",
    "checkout_session_id",
    "payment_intent_id",
    "invoice_id",
    "stripe_subscription_id",
    "stripe_subscription_status",
    "customer_id",
    "customer_email",
    "amount",
    "currency",
    "created",
    "amount_refunded",
    "dispute_status",
    "billing_reason",
    "period_end",
    "event_id",
    "livemode",
    "zero_reason",
)
SUBSCRIPTION_COLUMNS: tuple[str, ...] = (
    "id",
    "email",
    "customer_id",
    "checkout_session_id",
    "payment_intent_id",
    "stripe_subscription_id",
    "amount",
    "currency",
    "status",
    "created_at",
    "activated_at",
    "current_period_end",
)
SCOPES = ("all", "subscriptions")


@dataclass
class Reconciliation:
    findings: list[Finding]
    summary: dict  # payments, matched, parity_pct, open_by_kind {kind: n}, amount_at_risk {currency: minor}
    held_back: HeldBack = field(default_factory=HeldBack)
    unmatched: list[str] = field(default_factory=list)  # counted payments that do not match, by payment_id


def empty_payments() -> pd.DataFrame:
    """A payments frame with no rows and the column types `reconcile` expects."""
    return pd.DataFrame({c: pd.Series(dtype=_payment_dtype(c)) for c in PAYMENT_COLUMNS})


def empty_subscriptions() -> pd.DataFrame:
    """A subscriptions frame with no rows and the column types `reconcile` expects."""
    return pd.DataFrame({c: pd.Series(dtype=_row_dtype(c)) for c in SUBSCRIPTION_COLUMNS})


def _payment_dtype(column: str) -> str:
    if column in ("amount", "amount_refunded"):
        return "int64"
    if column in ("created", "period_end"):
        return "datetime64[us, UTC]"
    return "bool" if column == "livemode" else "str"


def _row_dtype(column: str) -> str:
    if column == "id":
        return "object"  # int or str, whatever the app uses
    if column == "amount":
        return "Int64"
    if column in ("created_at", "activated_at", "current_period_end"):
        return "datetime64[us, UTC]"
    return "str"


# The text columns of each frame (an empty id is no id), by the types above.
_TEXT_PAYMENT = tuple(c for c in PAYMENT_COLUMNS if _payment_dtype(c) == "str")
_TEXT_ROW = tuple(c for c in SUBSCRIPTION_COLUMNS if _row_dtype(c) == "str")


def reconcile(
    payments: pd.DataFrame,
    subscriptions: pd.DataFrame,
    *,
    now: datetime,
    grace: timedelta,
    active_statuses: Collection[str] = ("active", "trialing"),
    scope: str = "all",
    snapshot: SnapshotState | None = None,
) -> Reconciliation:
    """Compare payments with subscription rows; see the module docstring for the rules."""
    if scope not in SCOPES:
        raise ValueError(f"scope must be one of {SCOPES}, not {scope!r}")
    now_us = micros(now)
    grace_us = grace // timedelta(microseconds=1)
    pay = prepare(payments, PAYMENT_COLUMNS, _TEXT_PAYMENT, ("created", "period_end"), "payments")
    rows = prepare(
        subscriptions,
        SUBSCRIPTION_COLUMNS,
        _TEXT_ROW,
        ("created_at", "activated_at", "current_period_end"),
        "subscriptions",
    )
    w = World(pay, rows, now_us, grace_us, {s.strip().lower() for s in active_statuses})
    w.limit(scope, snapshot or SnapshotState())
    unpaid, named = find_paid_without_subscription(w)
    findings = (
        unpaid
        + find_subscription_not_active(w)
        + find_value_mismatches(w)
        + find_period_not_extended(w)
        + find_duplicates(w)
        + find_active_without_payment(w, spared=named)
    )
    order = {k: i for i, k in enumerate(PAYMENT_KINDS)}
    findings = list({f.key: f for f in reversed(findings)}.values())  # a payment id listed twice: once
    findings.sort(key=lambda f: (order[f.kind], f.key))
    unmatched = w.needs_row & ~_matches(w)
    ids = w.pay["payment_id"].to_numpy()[unmatched]
    return Reconciliation(findings, _summary(w, findings, unmatched), w.held, sorted({str(i) for i in ids}))


def _matches(w: World) -> np.ndarray:
    """Per payment, whether the app's access matches the money (PARITY_DEFINITION)."""
    has_active = w.n_active > 0
    return np.where(w.settled, ~has_active, has_active)


def _summary(w: World, findings: list[Finding], unmatched: np.ndarray) -> dict:
    """Counts over the payments that need a row (all of them unless scope says otherwise)."""
    counted = w.needs_row
    matched = int(np.count_nonzero(counted & ~unmatched))
    open_by_kind: dict[str, int] = {}
    for f in findings:
        open_by_kind[f.kind] = open_by_kind.get(f.kind, 0) + 1
    at_risk = amount_at_risk({"kind": f.kind, "amount": f.amount, "currency": f.currency} for f in findings)
    n_pay = int(np.count_nonzero(counted))
    return {
        "payments": n_pay,
        "matched": matched,
        "parity_pct": round(100 * matched / n_pay, 1) if n_pay else 100.0,
        "open_by_kind": open_by_kind,
        "amount_at_risk": at_risk,
    }
