"""The tables `monitor.rules.reconcile` reads: its inputs prepared once, and the strong matches between
payments and subscription rows, as the arrays every payment rule reads. Pure; vectorised.

Matching (the contract is monitor.rules.reconcile's docstring): a payment and a row match strongly when they
share a Checkout Session id, else a PaymentIntent id, else a Stripe subscription id; each pair is kept once,
with its strongest key. Times are microseconds since the epoch (`NAT` when missing), not pandas'
nanoseconds, because apps write far-future period ends (9999-12-31).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from monitor.rules.completeness import ROW_LINKS, SETTLEMENT, SUBSCRIPTIONS, HeldBack, SnapshotState, reason

# Columns a frame may leave out (all missing then): what a payment of 0 was.
_OPTIONAL = ("zero_reason",)
# Stripe writes these in lower case already; the app's currency and status may be in any case.
_LOWERED = ("currency", "status")
_STRONG_KEYS = ("checkout_session_id", "payment_intent_id", "stripe_subscription_id")
_BY_SESSION, _BY_INTENT, BY_SUBSCRIPTION = 0, 1, 2  # a match's key, strongest first
NAT = np.iinfo(np.int64).min
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def prepare(
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


def micros(t: datetime) -> int:
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return (t - _EPOCH) // timedelta(microseconds=1)


def _micros_array(s: pd.Series) -> np.ndarray:
    """Microseconds since the epoch, UTC (naive values are taken as UTC); missing is NAT.

    Microseconds, not pandas' nanoseconds, because apps write far-future period ends (9999-12-31)."""
    s = pd.to_datetime(s, utc=True)
    if s.dt.unit != "us":
        s = s.dt.as_unit("us")
    return s.dt.tz_localize(None).to_numpy().view("int64")


def joint_codes(a: pd.Series, b: pd.Series) -> tuple[np.ndarray, np.ndarray, int]:
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


class World:
    """The prepared tables and the arrays every rule reads, computed once, vectorised."""

    def __init__(self, pay: pd.DataFrame, rows: pd.DataFrame, now: int, grace: int, active: set[str]):
        self.pay, self.rows, self.now, self.grace = pay, rows, now, grace
        n_pay, n_rows = len(pay), len(rows)
        self.n_pay, self.n_rows = n_pay, n_rows

        amount = pay["amount"].to_numpy()
        refunded = pay["amount_refunded"].to_numpy()
        self.settled = ((refunded > 0) & (refunded >= amount)) | (pay["dispute_status"] == "lost").to_numpy()
        created = pay["created"].to_numpy()
        self.due = (created != NAT) & (now - np.where(created == NAT, now, created) > grace)

        self.active = rows["status"].isin(active).to_numpy()
        self.trialing = (rows["status"] == "trialing").to_numpy()
        cpe = rows["current_period_end"].to_numpy()
        self.cpe_set = cpe != NAT
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
        by_ids = np.bincount(self.e_pay[self.e_key < BY_SUBSCRIPTION], minlength=n_pay)
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
                pc, rc, _ = joint_codes(self.pay[column], self.rows[column])
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
        return grouped(self.e_pay[sel], self.e_row[sel])

    # Python values of single payments and rows, fetched lazily but in bulk by the finding builders.
    def payment_values(self, idx: Iterable[int]) -> Values:
        return Values(self.pay, idx, ("created", "period_end"))

    def row_values(self, idx: Iterable[int]) -> Values:
        return Values(self.rows, idx, ("created_at", "activated_at", "current_period_end"))


def grouped(keys: np.ndarray, values: np.ndarray) -> dict[int, list[int]]:
    out: dict[int, list[int]] = {}
    for k, v in zip(keys.tolist(), values.tolist(), strict=True):
        out.setdefault(k, []).append(v)
    return out


class Values:
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
    datetimes (from the microseconds `prepare` made of them)."""
    if is_time:
        naive = s.to_numpy(dtype=np.int64).view("datetime64[us]").astype(object)  # NaT becomes None
        return [None if t is None else t.replace(tzinfo=UTC) for t in naive]
    if s.dtype in (np.int64, np.bool_):
        return s.tolist()
    return [plain(v) for v in s.tolist()]


def plain(v):
    if v is None or v is pd.NA or v is pd.NaT:
        return None
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v
