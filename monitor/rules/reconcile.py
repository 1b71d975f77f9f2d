"""Reconciliation: Stripe payments against the app's subscription rows. Pure: frames and `now` in, findings out.

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

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from monitor.rules.completeness import ROW_LINKS, SETTLEMENT, SUBSCRIPTIONS, HeldBack, SnapshotState, reason
from monitor.rules.findings import PAYMENT_KINDS, Finding, amount_at_risk
from monitor.rules.money import format_money

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


# Stripe subscription statuses after which no row is expected to be active.
ENDED_STRIPE_STATUSES = frozenset({"canceled", "incomplete_expired"})
# Apps store a period end a little differently (midnight, a day's rounding); less than this is no finding.
PERIOD_TOLERANCE = timedelta(days=1)
# A hint names at most this many weak candidates; only named ones are spared active_without_payment.
MAX_NAMED_CANDIDATES = 10
SCOPES = ("all", "subscriptions")
# How a payment of 0 is told in a hint (the payments' `zero_reason`).
_ZERO_STARTS = {"trial": "started a trial", "discount": "started with 100 % off"}

_TEXT_PAYMENT = (
    "payment_id",
    "source",
    "checkout_session_id",
    "payment_intent_id",
    "invoice_id",
    "stripe_subscription_id",
    "stripe_subscription_status",
    "customer_id",
    "customer_email",
    "currency",
    "dispute_status",
    "billing_reason",
    "event_id",
    "zero_reason",
)
_TEXT_ROW = (
    "email",
    "customer_id",
    "checkout_session_id",
    "payment_intent_id",
    "stripe_subscription_id",
    "currency",
    "status",
)
# Columns a frame may leave out (all missing then): what a payment of 0 was.
_OPTIONAL = ("zero_reason",)
# Stripe writes these in lower case already; the app's currency and status may be in any case.
_LOWERED = ("currency", "status")
_STRONG_KEYS = ("checkout_session_id", "payment_intent_id", "stripe_subscription_id")
_BY_SESSION, _BY_INTENT, _BY_SUBSCRIPTION = 0, 1, 2
_NAT = np.iinfo(np.int64).min
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NOT_LINKED = "no subscription row links to it by checkout session, payment intent or subscription id"


@dataclass
class Reconciliation:
    findings: list[Finding]
    summary: dict  # payments, matched, parity_pct, open_by_kind {kind: n}, amount_at_risk {currency: minor}
    held_back: HeldBack = field(default_factory=HeldBack)


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
    now_us = _micros(now)
    grace_us = grace // timedelta(microseconds=1)
    pay = _prepare(payments, PAYMENT_COLUMNS, _TEXT_PAYMENT, ("created", "period_end"), "payments")
    rows = _prepare(
        subscriptions,
        SUBSCRIPTION_COLUMNS,
        _TEXT_ROW,
        ("created_at", "activated_at", "current_period_end"),
        "subscriptions",
    )
    w = _World(pay, rows, now_us, grace_us, {s.strip().lower() for s in active_statuses})
    w.limit(scope, snapshot or SnapshotState())
    unpaid, named = _paid_without_subscription(w)
    findings = (
        unpaid
        + _subscription_not_active(w)
        + _value_checks(w)
        + _period_not_extended(w)
        + _duplicates(w)
        + _active_without_payment(w, spared=named)
    )
    order = {k: i for i, k in enumerate(PAYMENT_KINDS)}
    findings = list({f.key: f for f in reversed(findings)}.values())  # a payment id listed twice: once
    findings.sort(key=lambda f: (order[f.kind], f.key))
    return Reconciliation(findings, _summary(w, findings), w.held)


# --- preparing the inputs ---------------------------------------------------------------------------------


def _prepare(
    frame: pd.DataFrame,
    columns: Sequence[str],
    text: Sequence[str],
    times: Sequence[str],
    name: str,
) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame.columns and c not in _OPTIONAL]
    if missing:
        raise ValueError(f"{name} frame lacks columns {missing}; expected {list(columns)}")
    out = {}
    for c in columns:
        s = frame[c].reset_index(drop=True) if c in frame.columns else pd.Series([None] * len(frame))
        if c in text:
            s = s.astype("str")
            s = s.mask(s == "")  # an empty id is no id; missing values stay missing
            if c in _LOWERED:
                s = s.str.lower()
        elif c in times:
            s = pd.Series(_micros_array(s))
        elif c == "amount" and name == "subscriptions":
            s = pd.to_numeric(s).astype("Int64")  # the row may not know its amount
        elif c in ("amount", "amount_refunded"):
            s = pd.to_numeric(s).fillna(0).astype("int64")
        out[c] = s
    return pd.DataFrame(out)


def _micros(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // timedelta(microseconds=1)


def _micros_array(s: pd.Series) -> np.ndarray:
    """Microseconds since the epoch, UTC (naive values are taken as UTC); missing is _NAT.

    Microseconds, not pandas' nanoseconds, because apps write far-future period ends (9999-12-31)."""
    s = pd.to_datetime(s, utc=True)
    if s.dt.unit != "us":
        s = s.dt.as_unit("us")
    return s.dt.tz_localize(None).to_numpy().view("int64")


def _joint_codes(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
    """Codes for the values of two text columns in one space; missing is -1."""
    codes, uniques = _joint_values(a, b)
    return codes[: len(a)], codes[len(a) :], len(uniques)


def _joint_values(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Codes for the values of `a` then `b` in one space (missing is -1), and the values by code."""
    codes, uniques = pd.factorize(pd.concat([a, b], ignore_index=True))
    return codes, np.asarray(uniques)


def _chronological(created: np.ndarray, payment_id: pd.Series) -> np.ndarray:
    """Payment positions ordered by `created`, ties broken by payment_id: the same answer whatever the input
    order. Only the tied payments are sorted by id (sorting a million random ids costs about a second)."""
    order = np.argsort(created, kind="stable")
    ordered = created[order]
    tied = np.zeros(len(order), dtype=bool)
    same = ordered[1:] == ordered[:-1]
    tied[1:] |= same
    tied[:-1] |= same
    if tied.any():
        sub = order[tied]  # contiguous runs of equal `created`, in ascending `created`
        by_id = pd.DataFrame({"c": created[sub], "id": payment_id.iloc[sub].fillna("").to_numpy(), "p": sub})
        order[tied] = by_id.sort_values(["c", "id"], kind="stable")["p"].to_numpy()
    return order


def _group_max(n: int, groups: np.ndarray, values: np.ndarray, empty: int) -> np.ndarray:
    out = np.full(n, empty, dtype=np.int64)
    np.maximum.at(out, groups, values)
    return out


class _World:
    """The prepared tables and the arrays every rule reads, computed once, vectorised."""

    def __init__(self, pay: pd.DataFrame, rows: pd.DataFrame, now: int, grace: int, active: set[str]):
        self.pay, self.rows, self.now, self.grace = pay, rows, now, grace
        n_pay, n_rows = len(pay), len(rows)
        self.n_pay, self.n_rows = n_pay, n_rows

        amount = pay["amount"].to_numpy()
        refunded = pay["amount_refunded"].to_numpy()
        self.settled = ((refunded > 0) & (refunded >= amount)) | (pay["dispute_status"] == "lost").to_numpy()
        created = pay["created"].to_numpy()
        self.due = (created != _NAT) & (now - np.where(created == _NAT, now, created) > grace)

        self.active = rows["status"].isin(active).to_numpy()
        self.trialing = (rows["status"] == "trialing").to_numpy()
        cpe = rows["current_period_end"].to_numpy()
        self.cpe_set = cpe != _NAT
        self.expired = self.cpe_set & (cpe < now)

        # Chronological rank of each payment, ties broken by payment_id; order[rank] is the payment.
        self.order = _chronological(created, pay["payment_id"])
        self.rank = np.empty(n_pay, dtype=np.int64)
        self.rank[self.order] = np.arange(n_pay)

        # Stripe subscription ids of payments and rows, in one code space.
        codes, self.sub_ids = _joint_values(pay["stripe_subscription_id"], rows["stripe_subscription_id"])
        self.pay_sub, self.row_sub = codes[:n_pay], codes[n_pay:]
        n_subs = len(self.sub_ids)
        n_subs = max(n_subs, 1)  # per-subscription arrays are indexed with max(code, 0)
        with_sub = self.pay_sub >= 0
        self.sub_latest = _group_max(n_subs, self.pay_sub[with_sub], self.rank[with_sub], -1)
        self.sub_earliest = -_group_max(n_subs, self.pay_sub[with_sub], -self.rank[with_sub], -n_pay)
        self.is_latest_of_sub = with_sub & (self.sub_latest[np.maximum(self.pay_sub, 0)] == self.rank)
        trial_pay = with_sub & (pay["stripe_subscription_status"] == "trialing").to_numpy()
        self.trial_sub = np.zeros(n_subs, dtype=bool)
        self.trial_sub[self.pay_sub[trial_pay]] = True

        self.e_pay, self.e_row, self.e_key = self._strong_edges()
        e_active = self.active[self.e_row]
        self.n_matched = np.bincount(self.e_pay, minlength=n_pay)
        self.n_active = np.bincount(self.e_pay[e_active], minlength=n_pay)
        self.n_expired = np.bincount(self.e_pay[self.expired[self.e_row]], minlength=n_pay)
        by_ids = np.bincount(self.e_pay[self.e_key < _BY_SUBSCRIPTION], minlength=n_pay)
        self.only_by_sub = (self.n_matched > 0) & (by_ids == 0)
        self.row_matched = np.bincount(self.e_row, minlength=n_rows) > 0
        latest_rank = _group_max(n_rows, self.e_row, self.rank[self.e_pay], -1)
        self.row_latest = np.full(n_rows, -1, dtype=np.int64)  # the row's latest matched payment, or -1
        has_payment = latest_rank >= 0
        self.row_latest[has_payment] = self.order[latest_rank[has_payment]]

    def limit(self, scope: str, snapshot: SnapshotState) -> None:
        """What may be judged: the payments that need a row (`scope`), and, on an incomplete snapshot, the
        payments and rows whose judgement would need a resource that never synced (monitor.rules.completeness).
        Each rule leaves out what these masks hold back and notes it in `held`."""
        self.held = HeldBack()
        self.snapshot = snapshot
        pay, rows = self.pay, self.rows
        self.needs_row = np.ones(self.n_pay, dtype=bool) if scope == "all" else self.pay_sub >= 0
        missing = snapshot.missing_names
        no = np.zeros(self.n_pay, dtype=bool)
        self.hold_settle = pay["payment_intent_id"].notna().to_numpy() if missing & set(SETTLEMENT) else no
        self.hold_status = (
            (self.pay_sub >= 0) & pay["stripe_subscription_status"].isna().to_numpy()
            if SUBSCRIPTIONS in missing
            else no
        )
        unlinked = np.zeros(self.n_rows, dtype=bool)
        for column, resource in ROW_LINKS.items():
            if resource in missing:
                unlinked |= rows[column].notna().to_numpy()
        self.row_unlinked = unlinked & ~self.row_matched
        unknown_sub = (self.row_sub >= 0) if SUBSCRIPTIONS in missing else np.zeros(self.n_rows, dtype=bool)
        self.row_unknown = self.row_unlinked | (unknown_sub & ~self.row_matched)

    def hold(self, kind: str, held: np.ndarray, resources, what: str) -> None:
        """Note that `kind` was not judged for the `held` payments (or, for active_without_payment, rows)
        if any, with the identity keys their findings would have had."""
        if not held.any():
            return
        if kind == "active_without_payment":
            keys = (f"{kind}:row:{i}" for i in self.rows["id"].to_numpy()[held].tolist())
        else:
            keys = (f"{kind}:{i}" for i in self.pay["payment_id"].to_numpy()[held].tolist())
        self.held.add(kind, reason(self.snapshot, resources, f"{int(held.sum())} {what}"), keys)

    def _strong_edges(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(payment, row, key) for every strongly matched pair, each pair once with its strongest key.

        Each key is joined separately on non-missing values only: one join over three alternative keys
        would multiply rows."""
        pays, rows, keys = [], [], []
        for key, column in enumerate(_STRONG_KEYS):
            if column == "stripe_subscription_id":
                # A row naming a session but no subscription takes its session's payment's subscription,
                # so the subscription's renewals match it too (an app that stores only the session id).
                p, r = pays[_BY_SESSION], rows[_BY_SESSION]
                fill = (self.row_sub[r] < 0) & (self.pay_sub[p] >= 0)
                self.row_sub[r[fill]] = self.pay_sub[p[fill]]
                pc, rc = self.pay_sub, self.row_sub
            else:
                pc, rc, _ = _joint_codes(self.pay[column], self.rows[column])
            p, r = np.flatnonzero(pc >= 0), np.flatnonzero(rc >= 0)
            joined = pd.DataFrame({"c": pc[p], "p": p}).merge(pd.DataFrame({"c": rc[r], "r": r}), on="c")
            pays.append(joined["p"].to_numpy(dtype=np.int64))
            rows.append(joined["r"].to_numpy(dtype=np.int64))
            keys.append(np.full(len(joined), key, dtype=np.int8))
        p, r, k = np.concatenate(pays), np.concatenate(rows), np.concatenate(keys)
        first = ~pd.Series(p * max(self.n_rows, 1) + r).duplicated().to_numpy()  # keys joined strongest first
        return p[first], r[first], k[first]

    def edges_of(self, payments: np.ndarray) -> dict[int, list[int]]:
        """The rows strongly matched to each of a few payments."""
        wanted = np.zeros(self.n_pay, dtype=bool)
        wanted[payments] = True
        sel = wanted[self.e_pay]
        return _grouped(self.e_pay[sel], self.e_row[sel])

    # Python values of single payments and rows, fetched lazily but in bulk by the finding builders.
    def payment_values(self, idx: Iterable[int]) -> _Values:
        return _Values(self.pay, idx, ("created", "period_end"))

    def row_values(self, idx: Iterable[int]) -> _Values:
        return _Values(self.rows, idx, ("created_at", "activated_at", "current_period_end"))


def _grouped(keys: np.ndarray, values: np.ndarray) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for k, v in zip(keys.tolist(), values.tolist(), strict=True):
        out.setdefault(k, []).append(v)
    return out


class _Values:
    """Plain Python values of a few rows of a large frame: one vectorised take, columns converted on use."""

    def __init__(self, frame: pd.DataFrame, idx: Iterable[int], times: Sequence[str]):
        positions = np.unique(np.fromiter(idx, dtype=np.int64))
        self._at = {p: i for i, p in enumerate(positions.tolist())}
        self._part = frame.iloc[positions]
        self._times = times
        self._cols: dict[str, list] = {}

    def __call__(self, i: int, column: str):
        values = self._cols.get(column)
        if values is None:
            values = self._cols[column] = _plain_list(self._part[column], column in self._times)
        return values[self._at[i]]


def _plain_list(s: pd.Series, is_time: bool) -> list:
    """JSON-friendly Python values: numpy scalars unwrapped, every kind of missing as None, times as UTC
    datetimes (from the microseconds `_prepare` made of them)."""
    if is_time:
        naive = s.to_numpy(dtype=np.int64).view("datetime64[us]").astype(object)  # NaT becomes None
        return [None if t is None else t.replace(tzinfo=UTC) for t in naive]
    if s.dtype in (np.int64, np.bool_):
        return s.tolist()
    return [_plain(v) for v in s.tolist()]


def _plain(v):
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v


# --- the rules --------------------------------------------------------------------------------------------


def _paid_without_subscription(w: _World) -> tuple[list[Finding], set[int]]:
    """The findings, and the weak candidate rows their hints name."""
    judged = w.due & ~w.settled & (w.n_matched == 0) & w.needs_row
    w.hold("paid_without_subscription", judged & w.hold_settle, SETTLEMENT, "payments may be refunded")
    found = np.flatnonzero(judged & ~w.hold_settle)
    if not len(found):
        return [], set()
    candidates = _weak_candidates(w, found)
    unlinked = {p for p, rs in candidates.items() if any(w.row_unlinked[r] for r, _ in rs)}
    if unlinked:  # a row of the same customer names an id that a missing list would have resolved
        held = np.zeros(w.n_pay, dtype=bool)
        held[list(unlinked)] = True
        w.hold(
            "paid_without_subscription",
            held,
            set(ROW_LINKS.values()),
            "payments whose customer has a row naming ids not synced",
        )
        found = np.array([p for p in found.tolist() if p not in unlinked], dtype=np.int64)
        if not len(found):
            return [], set()
    pv = w.payment_values(found)
    rv = w.row_values(r for rs in candidates.values() for r, _ in rs)
    lv = w.payment_values(
        w.row_latest[r] for rs in candidates.values() for r, _ in rs if w.row_latest[r] >= 0
    )
    out, named_rows = [], set()
    for p in found.tolist():
        hint = f"{_paid(pv, p)}; {_NOT_LINKED}"
        named = sorted(candidates.get(p, []), key=lambda c: (w.row_matched[c[0]], _id_order(rv(c[0], "id"))))
        named = named[:MAX_NAMED_CANDIDATES]
        if named:
            parts = []
            for r, how in named:
                other = w.row_latest[r]
                linked = f", belongs to {lv(other, 'payment_id')}" if other >= 0 else ""
                who = f"{_email(rv, r)}, {rv(r, 'status')}{linked}"
                parts.append(f"row {rv(r, 'id')} ({who}) matches only by {how}")
            more = len(candidates[p]) - len(named)
            tail = f", and {more} more" if more > 0 else ""
            hint += "; weak candidate" + ("s: " if len(named) > 1 else ": ") + ", ".join(parts) + tail
            named_rows.update(r for r, _ in named)
        out.append(_payment_finding("paid_without_subscription", p, [], hint, pv, rv))
    return out, named_rows


def _weak_candidates(w: _World, found: np.ndarray) -> dict[int, list[tuple[int, str]]]:
    """Rows sharing only the customer id or the e-mail with each of the given payments."""
    pay = w.pay.iloc[found]
    pay_email = pay["customer_email"].str.strip().str.lower()
    row_email = w.rows["email"].str.strip().str.lower()
    pairs = []
    for by, pay_key, row_key in (
        ("customer id", pay["customer_id"], w.rows["customer_id"]),
        ("e-mail", pay_email, row_email),
    ):
        left = pd.DataFrame({"k": pay_key.to_numpy(), "p": found}).dropna()
        hit = row_key.isin(set(left["k"]))
        right = pd.DataFrame({"k": row_key[hit].to_numpy(), "r": np.flatnonzero(hit.to_numpy())})
        joined = left.merge(right, on="k")[["p", "r"]]
        pairs.append(joined.assign(by=by))
    both = pd.concat(pairs, ignore_index=True)
    both = both.groupby(["p", "r"], sort=True)["by"].agg(lambda s: " and ".join(sorted(set(s))))
    out: dict[int, list[tuple[int, str]]] = {}
    for (p, r), how in both.items():
        out.setdefault(int(p), []).append((int(r), how))
    return out


def _subscription_not_active(w: _World) -> list[Finding]:
    ended = w.pay["stripe_subscription_status"].isin(ENDED_STRIPE_STATUSES).to_numpy()
    judged = (
        w.due
        & ~w.settled
        & (w.n_matched > 0)
        & (w.n_active == 0)
        & ~ended
        & (w.n_expired < w.n_matched)
        & (~w.only_by_sub | w.is_latest_of_sub)
        & w.needs_row
    )
    kind = "subscription_not_active"
    w.hold(kind, judged & w.hold_settle, SETTLEMENT, "payments may be refunded")
    w.hold(kind, judged & w.hold_status, (SUBSCRIPTIONS,), "payments whose Stripe subscription is not stored")
    found = np.flatnonzero(judged & ~w.hold_settle & ~w.hold_status)
    if not len(found):
        return []
    matched = w.edges_of(found)
    pv, rv = w.payment_values(found), w.row_values(r for rs in matched.values() for r in rs)
    out = []
    for p in found.tolist():
        rs = _sorted_rows(matched[p], rv)
        if len(rs) == 1:
            r = rs[0]
            what = f"row {rv(r, 'id')} ({_email(rv, r)}) links to it but is {rv(r, 'status')}, not active"
        else:
            what = "rows " + _and(f"{rv(r, 'id')} ({rv(r, 'status')})" for r in rs)
            what += " link to it but none is active"
        stripe_status = pv(p, "stripe_subscription_status")
        also = f", while Stripe subscription {pv(p, 'stripe_subscription_id')} is {stripe_status}"
        hint = f"{_paid(pv, p)}; {what}" + (also if stripe_status else "")
        out.append(_payment_finding("subscription_not_active", p, rs, hint, pv, rv))
    return out


def _value_checks(w: _World) -> list[Finding]:
    """amount_mismatch and refunded_but_active: each active row against its latest matched payment."""
    rows = np.flatnonzero(w.active & (w.row_latest >= 0))
    latest = w.row_latest[rows]
    pay_amount = w.pay["amount"].to_numpy()[latest]
    row_amount = w.rows["amount"].iloc[rows]
    priced = (pay_amount != 0) & (w.pay["billing_reason"] != "subscription_update").to_numpy()[latest]
    amount_differs = (row_amount.notna() & (row_amount != pay_amount)).to_numpy(dtype=bool) & priced
    row_cur = w.rows["currency"].iloc[rows].reset_index(drop=True)
    pay_cur = w.pay["currency"].iloc[latest].reset_index(drop=True)
    currency_differs = (row_cur.notna() & (row_cur != pay_cur)).to_numpy(dtype=bool)
    mismatch = _grouped(latest[amount_differs | currency_differs], rows[amount_differs | currency_differs])
    refunded = _grouped(latest[w.settled[latest]], rows[w.settled[latest]])
    if not mismatch and not refunded:
        return []
    pv = w.payment_values([*mismatch, *refunded])
    rv = w.row_values(r for rs in [*mismatch.values(), *refunded.values()] for r in rs)
    out = []
    for p, rs in sorted(mismatch.items()):
        rs = _sorted_rows(rs, rv)
        paid = format_money(pv(p, "amount"), pv(p, "currency"))
        says = "; ".join(
            f"row {rv(r, 'id')} says {format_money(rv(r, 'amount'), rv(r, 'currency') or pv(p, 'currency'))}"
            for r in rs
        )
        when = _when(pv(p, "created"))
        hint = f"{says}, Stripe was paid {paid} ({pv(p, 'payment_id')} on {when})"
        out.append(_payment_finding("amount_mismatch", p, rs, hint, pv, rv))
    for p, rs in sorted(refunded.items()):
        rs = _sorted_rows(rs, rv)
        if pv(p, "dispute_status") == "lost":
            why = "dispute lost"
        else:
            why = f"refunded in full ({format_money(pv(p, 'amount_refunded'), pv(p, 'currency'))})"
        still = (
            f"row {rv(rs[0], 'id')} is" if len(rs) == 1 else "rows " + _and(rv(r, "id") for r in rs) + " are"
        )
        hint = f"{_paid(pv, p)}, {why}, yet {still} still active"
        out.append(_payment_finding("refunded_but_active", p, rs, hint, pv, rv))
    return out


def _period_not_extended(w: _World) -> list[Finding]:
    period_end = w.pay["period_end"].to_numpy()
    judged = (
        w.due
        & ~w.settled
        & (w.pay["source"] == "invoice").to_numpy()
        & (period_end != _NAT)
        & w.is_latest_of_sub
    )
    w.hold("period_not_extended", judged & w.hold_settle, SETTLEMENT, "invoices may be refunded")
    judged &= ~w.hold_settle
    sel = judged[w.e_pay] & w.active[w.e_row]
    p, r = w.e_pay[sel], w.e_row[sel]
    cpe = w.rows["current_period_end"].to_numpy()[r]
    tolerance = PERIOD_TOLERANCE // timedelta(microseconds=1)
    behind = (cpe == _NAT) | (cpe < period_end[p] - tolerance)
    found = _grouped(p[behind], r[behind])
    if not found:
        return []
    pv, rv = w.payment_values(found), w.row_values(r for rs in found.values() for r in rs)
    out = []
    for p, rs in sorted(found.items()):
        rs = _sorted_rows(rs, rv)
        if len(rs) == 1:
            end = _when(rv(rs[0], "current_period_end"))
            rows_text = f"row {rv(rs[0], 'id')} " + (f"ends {end}" if end else "has no period end")
        else:
            ends = _and(f"{rv(r, 'id')} ({_when(rv(r, 'current_period_end')) or 'no end'})" for r in rs)
            rows_text = f"rows {ends} end earlier"
        hint = (
            f"invoice {pv(p, 'payment_id')} paid {format_money(pv(p, 'amount'), pv(p, 'currency'))} on "
            f"{_when(pv(p, 'created'))} for the period to {_when(pv(p, 'period_end'))}, but {rows_text}"
        )
        out.append(_payment_finding("period_not_extended", p, rs, hint, pv, rv))
    return out


def _duplicates(w: _World) -> list[Finding]:
    # One payment, several active rows linked by its session or intent id.
    sel = (w.e_key < _BY_SUBSCRIPTION) & w.active[w.e_row]
    per_payment = np.bincount(w.e_pay[sel], minlength=w.n_pay)
    sel &= per_payment[w.e_pay] > 1
    by_payment = _grouped(w.e_pay[sel], w.e_row[sel])
    # One Stripe subscription id, several active rows.
    sel = w.active & (w.row_sub >= 0)
    per_sub = np.bincount(w.row_sub[sel], minlength=len(w.sub_latest))
    sel &= per_sub[np.maximum(w.row_sub, 0)] > 1
    by_sub = _grouped(w.row_sub[sel], np.flatnonzero(sel))
    if not by_payment and not by_sub:
        return []
    sub_payment = {s: int(w.order[w.sub_earliest[s]]) if w.sub_earliest[s] < w.n_pay else -1 for s in by_sub}
    pv = w.payment_values([*by_payment, *(p for p in sub_payment.values() if p >= 0)])
    rv = w.row_values(r for rs in [*by_payment.values(), *by_sub.values()] for r in rs)
    out, seen = [], set()
    for p in sorted(by_payment, key=lambda p: w.rank[p]):
        rs = _sorted_rows(by_payment[p], rv)
        if tuple(rs) in seen:
            continue
        seen.add(tuple(rs))
        hint = f"rows {_and(rv(r, 'id') for r in rs)} are {_all(rs)} active for one payment: {_paid(pv, p)}"
        out.append(_payment_finding("duplicate_subscription", p, rs, hint, pv, rv))
    for s, rs in by_sub.items():
        rs = _sorted_rows(rs, rv)
        if tuple(rs) in seen:
            continue
        seen.add(tuple(rs))
        sub_id = w.sub_ids[s]
        hint = f"rows {_and(rv(r, 'id') for r in rs)} are {_all(rs)} active for Stripe subscription {sub_id}"
        p = sub_payment[s]
        if p >= 0:
            f = _payment_finding("duplicate_subscription", p, rs, f"{hint}; first {_paid(pv, p)}", pv, rv)
        else:
            f = _row_finding("duplicate_subscription", rs, hint, rv)
            f.occurred_at = max((rv(r, "created_at") for r in rs if rv(r, "created_at")), default=None)
        f.key = f"duplicate_subscription:sub:{sub_id}"
        out.append(f)
    return out


def _active_without_payment(w: _World, spared: set[int]) -> list[Finding]:
    created = w.rows["created_at"].to_numpy()
    old = (created == _NAT) | (w.now - np.where(created == _NAT, w.now, created) > w.grace)
    trial = w.trialing | ((w.row_sub >= 0) & w.trial_sub[np.maximum(w.row_sub, 0)])
    judged = w.active & ~w.row_matched & old & ~trial
    w.hold(
        "active_without_payment",
        judged & w.row_unknown,
        (*ROW_LINKS.values(), SUBSCRIPTIONS),
        "rows naming ids not synced",
    )
    found = np.flatnonzero(judged & ~w.row_unknown)
    found = [r for r in found.tolist() if r not in spared]  # reported through a paid_without_subscription
    if not found:
        return []
    rv = w.row_values(found)
    out = []
    for r in found:
        since = f" since {_when(rv(r, 'created_at'))}" if rv(r, "created_at") else ""
        hint = (
            f"row {rv(r, 'id')} ({_email(rv, r)}) is {rv(r, 'status')}{since}, but no Stripe payment links "
            "to it by checkout session, payment intent or subscription id"
        )
        f = _row_finding("active_without_payment", [r], hint, rv)
        f.key = f"active_without_payment:row:{rv(r, 'id')}"
        out.append(f)
    return out


def _summary(w: _World, findings: list[Finding]) -> dict:
    """Counts over the payments that need a row (all of them unless scope says otherwise)."""
    has_active = w.n_active > 0
    counted = w.needs_row
    matched = int(np.count_nonzero(np.where(w.settled, ~has_active, has_active) & counted))
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


# --- building findings and their hints --------------------------------------------------------------------


def _payment_finding(kind: str, p: int, rs: list[int], hint: str, pv: _Values, rv: _Values) -> Finding:
    customer_id, email = pv(p, "customer_id"), pv(p, "customer_email")
    for r in rs:  # the payment lacks them: the rows concerned know the customer
        customer_id = customer_id or rv(r, "customer_id")
        email = email or rv(r, "email")
    return Finding(
        kind=kind,
        key=f"{kind}:{pv(p, 'payment_id')}",
        payment_id=pv(p, "payment_id"),
        payment_intent_id=pv(p, "payment_intent_id"),
        customer_id=customer_id,
        customer_email=email,
        amount=pv(p, "amount"),
        currency=pv(p, "currency"),
        subscription_ids=[rv(r, "id") for r in rs],
        event_id=pv(p, "event_id"),
        hint=hint,
        occurred_at=pv(p, "created"),
    )


def _row_finding(kind: str, rs: list[int], hint: str, rv: _Values) -> Finding:
    first = rs[0]
    return Finding(
        kind=kind,
        key="",
        customer_id=rv(first, "customer_id"),
        customer_email=rv(first, "email"),
        amount=rv(first, "amount"),
        currency=rv(first, "currency"),
        subscription_ids=[rv(r, "id") for r in rs],
        hint=hint,
        occurred_at=rv(first, "created_at"),
    )


def _id_order(row_id) -> tuple:
    """Sort key for row ids of any type: numbers before text, each in its natural order."""
    return (1, str(row_id)) if isinstance(row_id, str) else (0, row_id)


def _sorted_rows(rs: Iterable[int], rv: _Values) -> list[int]:
    return sorted(set(rs), key=lambda r: _id_order(rv(r, "id")))


def _email(rv: _Values, r: int) -> str:
    return rv(r, "email") or "no e-mail"


def _paid(pv: _Values, p: int) -> str:
    """How a payment is told in a hint: "paid USD 149.00 on … (cs_…)", or for a payment of 0 what it was
    ("started a trial on … (cs_…), nothing to pay")."""
    start = _ZERO_STARTS.get(pv(p, "zero_reason")) if not pv(p, "amount") else None
    if start:
        return f"{start} on {_when(pv(p, 'created'))} ({pv(p, 'payment_id')}), nothing to pay"
    money = format_money(pv(p, "amount"), pv(p, "currency"))
    return f"paid {money} on {_when(pv(p, 'created'))} ({pv(p, 'payment_id')})"


def _when(t: datetime | None) -> str:
    return t.isoformat(sep=" ", timespec="minutes")[:16] + " UTC" if t else ""


def _and(items: Iterable) -> str:
    items = [str(i) for i in items]
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _all(rs: list) -> str:
    return "both" if len(rs) == 2 else "all"
