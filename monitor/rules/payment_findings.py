"""The payment finding kinds, one function each: what it judges on the tables of `monitor.rules.matching`,
what it holds back on an incomplete snapshot, and the hint it writes. Pure. The rules themselves are the
contract in monitor.rules.reconcile's docstring, which calls these in order.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from monitor.rules.completeness import ROW_LINKS, SETTLEMENT, SUBSCRIPTIONS
from monitor.rules.findings import Finding
from monitor.rules.matching import BY_SUBSCRIPTION, NAT, Values, World, grouped
from monitor.rules.money import format_money

# Stripe subscription statuses after which no row is expected to be active.
ENDED_STRIPE_STATUSES = frozenset({"canceled", "incomplete_expired"})
# Apps store a period end a little differently (midnight, a day's rounding); less than this is no finding.
PERIOD_TOLERANCE = timedelta(days=1)
# A hint names at most this many weak candidates; only named ones are spared active_without_payment.
MAX_NAMED_CANDIDATES = 10
# How a payment of 0 is told in a hint (the payments' `zero_reason`).
_ZERO_STARTS = {"trial": "started a trial", "discount": "started with 100 % off"}
_NOT_LINKED = "no subscription row links to it by checkout session, payment intent or subscription id"


def find_paid_without_subscription(w: World) -> tuple[list[Finding], set[int]]:
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


def _weak_candidates(w: World, found: np.ndarray) -> dict[int, list[tuple[int, str]]]:
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


def find_subscription_not_active(w: World) -> list[Finding]:
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


def find_value_mismatches(w: World) -> list[Finding]:
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
    mismatch = grouped(latest[amount_differs | currency_differs], rows[amount_differs | currency_differs])
    refunded = grouped(latest[w.settled[latest]], rows[w.settled[latest]])
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


def find_period_not_extended(w: World) -> list[Finding]:
    period_end = w.pay["period_end"].to_numpy()
    judged = (
        w.due
        & ~w.settled
        & (w.pay["source"] == "invoice").to_numpy()
        & (period_end != NAT)
        & w.is_latest_of_sub
    )
    w.hold("period_not_extended", judged & w.hold_settle, SETTLEMENT, "invoices may be refunded")
    judged &= ~w.hold_settle
    sel = judged[w.e_pay] & w.active[w.e_row]
    p, r = w.e_pay[sel], w.e_row[sel]
    cpe = w.rows["current_period_end"].to_numpy()[r]
    tolerance = PERIOD_TOLERANCE // timedelta(microseconds=1)
    behind = (cpe == NAT) | (cpe < period_end[p] - tolerance)
    found = grouped(p[behind], r[behind])
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


def find_duplicates(w: World) -> list[Finding]:
    # One payment, several active rows linked by its session or intent id.
    sel = (w.e_key < BY_SUBSCRIPTION) & w.active[w.e_row]
    per_payment = np.bincount(w.e_pay[sel], minlength=w.n_pay)
    sel &= per_payment[w.e_pay] > 1
    by_payment = grouped(w.e_pay[sel], w.e_row[sel])
    # One Stripe subscription id, several active rows.
    sel = w.active & (w.row_sub >= 0)
    per_sub = np.bincount(w.row_sub[sel], minlength=len(w.sub_latest))
    sel &= per_sub[np.maximum(w.row_sub, 0)] > 1
    by_sub = grouped(w.row_sub[sel], np.flatnonzero(sel))
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


def find_active_without_payment(w: World, spared: set[int]) -> list[Finding]:
    created = w.rows["created_at"].to_numpy()
    old = (created == NAT) | (w.now - np.where(created == NAT, w.now, created) > w.grace)
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


# --- building findings and their hints --------------------------------------------------------------------


def _payment_finding(kind: str, p: int, rs: list[int], hint: str, pv: Values, rv: Values) -> Finding:
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


def _row_finding(kind: str, rs: list[int], hint: str, rv: Values) -> Finding:
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


def _sorted_rows(rs: Iterable[int], rv: Values) -> list[int]:
    return sorted(set(rs), key=lambda r: _id_order(rv(r, "id")))


def _email(rv: Values, r: int) -> str:
    return rv(r, "email") or "no e-mail"


def _paid(pv: Values, p: int) -> str:
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
