"""A small Stripe account built case by case from Stripe's published examples, plus the app's rows for it.

Shared by the sync, store and end-to-end tests. Every object is a copy of Stripe's example of its type
with the fields of the case written over it, so it has the shape the real API returns.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import create_engine, text

from monitor.app_db import create_default_schema
from monitor.emulator.shapes import example, paid_charge, paid_intent, paid_session, session_customer_details
from monitor.rules.findings import WEBHOOK_KINDS

MONTH_S = 30 * 86400
# What redis-py said when the app's webhook handler could not reach its Redis: the incident's error, as the
# app logged it and the monitor quotes it.
REDIS_ERROR = "Error 111 connecting to localhost:6379. Connection refused."


def iso(ts: int) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass
class Account:
    now: int
    objects: list[dict] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    _ids: itertools.count = field(default_factory=lambda: itertools.count(1))

    def id(self, prefix: str) -> str:
        return f"{prefix}_cast{next(self._ids):06d}"

    def customer(self, email: str, created: int) -> str:
        cid = self.id("cus")
        self.objects.append(
            example("customer", id=cid, email=email, name=None, created=created, livemode=False)
        )
        return cid

    def checkout_payment(
        self,
        email: str,
        amount: int = 14900,
        *,
        age_s: int = 86400,
        refunded: int = 0,
        dispute: str | None = None,
    ) -> dict:
        """A paid one-time Checkout Session with its customer, PaymentIntent, Charge and event."""
        created = self.now - age_s
        cus = self.customer(email, created - 60)
        pi, ch = self.intent(cus, amount, created, refunded=refunded, disputed=dispute is not None)
        cs, evt = self.id("cs"), self.id("evt")
        session = paid_session(
            id=cs,
            amount_total=amount,
            customer=cus,
            customer_details=session_customer_details(email=email),
            payment_intent=pi,
            created=created,
        )
        self.objects.append(session)
        self.objects.append(
            example(
                "event",
                id=evt,
                type="checkout.session.completed",
                created=created + 2,
                data={"object": session},
                pending_webhooks=0,
                livemode=False,
            )
        )
        if refunded:
            self.refund(pi, ch, refunded, created + 60)
        if dispute:
            self.objects.append(
                example(
                    "dispute",
                    id=self.id("dp"),
                    amount=amount,
                    charge=ch,
                    payment_intent=pi,
                    currency="usd",
                    status=dispute,
                    created=created + 120,
                    livemode=False,
                )
            )
        return {
            "cs": cs,
            "pi": pi,
            "ch": ch,
            "cus": cus,
            "evt": evt,
            "email": email,
            "amount": amount,
            "created": created,
        }

    # --- current API shapes: subscriptions through Checkout, invoices paid by PaymentIntents ------------

    def event(self, kind: str, obj: dict, created: int, *, pending: int = 0) -> str:
        """An event carrying a copy of `obj` as it is now (an invoice's copy never has `payments`, as
        Stripe's never does). Events of one second are listed in the order they are added, newest last."""
        body = {k: v for k, v in obj.items() if not (obj.get("object") == "invoice" and k == "payments")}
        evt = self.id("evt")
        self.objects.append(
            example(
                "event",
                id=evt,
                type=kind,
                created=created,
                data={"object": copy.deepcopy(body)},
                pending_webhooks=pending,
                livemode=False,
                api_version="2026-10-28.endive",
            )
        )
        return evt

    def intent(
        self,
        cus: str,
        amount: int,
        created: int,
        *,
        status: str = "succeeded",
        refunded: int = 0,
        disputed: bool = False,
    ) -> tuple[str, str]:
        """A PaymentIntent of today's shape (no `invoice` field) and its charge: (pi id, charge id)."""
        pi, ch = self.id("pi"), self.id("ch")
        ok = status == "succeeded"
        intent = paid_intent(
            amount,
            ch,
            id=pi,
            amount_received=amount if ok else 0,
            status=status,
            customer=cus,
            created=created,
        )
        intent.pop("invoice", None)
        self.objects.append(intent)
        failed = {} if ok else {"paid": False, "captured": False, "status": "failed"}
        self.objects.append(
            paid_charge(
                amount,
                pi,
                id=ch,
                amount_refunded=refunded,
                refunded=refunded >= amount,
                disputed=disputed,
                customer=cus,
                created=created,
                **failed,
            )
        )
        return pi, ch

    def invoice(
        self,
        cus: str,
        sub: str | None,
        created: int,
        *,
        amounts: tuple[int, ...] = (14900,),
        subtotal: int | None = None,
        reason: str = "subscription_create",
        period: tuple[int, int] | None = None,
        tie: bool = True,
    ) -> dict:
        """A paid invoice of today's shape: its subscription under `parent`, one PaymentIntent per amount in
        `payments` (an includable field: served only when expanded), and the events Stripe sends:
        `invoice.finalized` (open) and `invoice.paid` in the same second when `tie`, as a renewal's are."""
        inv = self.id("in")
        total = sum(amounts)
        intents = [self.intent(cus, a, created) for a in amounts if a]
        start, end = period or (created, created + MONTH_S)
        line = copy.deepcopy(example("invoice")["lines"]["data"][0])
        line.update(
            id=self.id("il"), amount=total, invoice=inv, period={"start": start, "end": end}, subscription=sub
        )
        invoice = example(
            "invoice",
            id=inv,
            customer=cus,
            customer_email=None,
            status="open",
            amount_due=total,
            amount_paid=0,
            amount_remaining=total,
            subtotal=total if subtotal is None else subtotal,
            total=total,
            currency="usd",
            billing_reason=reason,
            created=created,
            subscription=None,
            parent={
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"subscription": sub, "metadata": {}},
            }
            if sub
            else None,
            lines={"object": "list", "data": [line], "has_more": False, "url": f"/v1/invoices/{inv}/lines"},
            status_transitions={
                "finalized_at": created,
                "paid_at": None,
                "marked_uncollectible_at": None,
                "voided_at": None,
            },
            livemode=False,
        )
        invoice.pop("payment_intent", None)
        self.event("invoice.finalized", invoice, created)
        invoice.update(
            status="paid",
            amount_paid=total,
            amount_remaining=0,
            status_transitions=dict(invoice["status_transitions"], paid_at=created if tie else created + 5),
            payments={
                "object": "list",
                "data": [
                    example(
                        "invoice_payment",
                        id=self.id("inpay"),
                        invoice=inv,
                        amount_paid=amount,
                        amount_requested=amount,
                        currency="usd",
                        created=created,
                        is_default=n == 0,
                        livemode=False,
                        payment={"type": "payment_intent", "payment_intent": pi},
                        status="paid",
                        status_transitions={"canceled_at": None, "paid_at": created},
                    )
                    for n, (amount, (pi, _)) in enumerate(
                        zip([a for a in amounts if a], intents, strict=True)
                    )
                ],
                "has_more": False,
                "url": "/v1/invoice_payments",
            },
        )
        self.objects.append(invoice)
        self.event("invoice.paid", invoice, created if tie else created + 5)
        return {
            "in": inv,
            "pis": [pi for pi, _ in intents],
            "charges": [ch for _, ch in intents],
            "created": created,
        }

    def subscription_checkout(
        self,
        email: str,
        amount: int = 14900,
        *,
        age_s: int = 86400,
        trial: bool = False,
        discount: bool = False,
        async_paid_after_s: int | None = None,
        renewals: int = 0,
        status: str | None = None,
    ) -> dict:
        """A customer who subscribed through Checkout (mode subscription), today's shapes: the session, the
        subscription, its first invoice and `renewals` monthly renewal invoices, with their events.
        `trial` or `discount`: nothing to pay at the start (payment_status `no_payment_required`, a paid
        $0 invoice). `async_paid_after_s`: paid by an async method (SEPA, ACH), the session completing
        `unpaid` and `checkout.session.async_payment_succeeded` coming that much later."""
        created = self.now - age_s
        cus = self.customer(email, created - 60)
        cs, sub = self.id("cs"), self.id("sub")
        due = 0 if trial or discount else amount
        sub_status = status or ("trialing" if trial else "active")
        subscription = example(
            "subscription",
            id=sub,
            customer=cus,
            status=sub_status,
            created=created,
            start_date=created,
            livemode=False,
            trial_start=created if trial else None,
            trial_end=created + 14 * 86400 if trial else None,
            items={
                "object": "list",
                "data": [
                    dict(
                        example("subscription")["items"]["data"][0],
                        current_period_start=created,
                        current_period_end=created + (renewals + 1) * MONTH_S,
                    )
                ],
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={sub}",
            },
        )
        self.objects.append(subscription)
        paid_at = created + (async_paid_after_s or 0)
        first = self.invoice(cus, sub, paid_at, amounts=(due,), subtotal=amount if discount else due)
        session = paid_session(
            id=cs,
            payment_status="unpaid" if async_paid_after_s else ("paid" if due else "no_payment_required"),
            mode="subscription",
            amount_total=due,
            amount_subtotal=amount if discount else due,
            customer=cus,
            customer_details=session_customer_details(email=email),
            subscription=sub,
            invoice=first["in"],
            created=created,
        )
        self.objects.append(session)
        evt = self.event("checkout.session.completed", session, created + 1)
        if async_paid_after_s:
            session["payment_status"] = "paid"
            evt = self.event("checkout.session.async_payment_succeeded", session, paid_at + 1)
        invoices = [first]
        for k in range(1, renewals + 1):
            at = created + k * MONTH_S
            invoices.append(
                self.invoice(
                    cus, sub, at, amounts=(amount,), reason="subscription_cycle", period=(at, at + MONTH_S)
                )
            )
        return {
            "cs": cs,
            "sub": sub,
            "cus": cus,
            "evt": evt,
            "email": email,
            "amount": due,
            "created": created,
            "paid_at": paid_at,
            "invoices": invoices,
        }

    def one_off_intent(self, email: str, amount: int = 2900, *, age_s: int = 86400) -> dict:
        """A payment made straight with a PaymentIntent (no Checkout, no invoice): a one-off purchase."""
        created = self.now - age_s
        cus = self.customer(email, created - 60)
        pi, ch = self.intent(cus, amount, created)
        intent = next(o for o in self.objects if o["id"] == pi)
        evt = self.event("payment_intent.succeeded", intent, created + 1)
        return {
            "pi": pi,
            "ch": ch,
            "cus": cus,
            "evt": evt,
            "email": email,
            "amount": amount,
            "created": created,
        }

    def refund(self, pi: str, ch: str, amount: int, created: int) -> str:
        rid = self.id("re")
        self.objects.append(
            example(
                "refund",
                id=rid,
                amount=amount,
                charge=ch,
                payment_intent=pi,
                currency="usd",
                status="succeeded",
                created=created,
            )
        )
        return rid

    def subscription_row(
        self, pay: dict, *, status: str = "active", by: tuple[str, ...] = ("cs",), amount: int | None = None
    ) -> int:
        """The app's row for a subscription_checkout, naming the ids in `by` (cs, sub, pi)."""
        rid = self.row(None, pay["email"], status=status, amount=pay["amount"] if amount is None else amount)
        row = self.rows[-1]
        row.update(
            stripe_customer_id=pay["cus"],
            stripe_checkout_session_id=pay["cs"] if "cs" in by else None,
            stripe_subscription_id=pay["sub"] if "sub" in by else None,
            stripe_payment_intent_id=pay["invoices"][0]["pis"][0] if "pi" in by else None,
            created_at=iso(pay["created"] + 5),
            current_period_end=iso(pay["invoices"][-1]["created"] + MONTH_S),
        )
        return rid

    def row(self, pay: dict | None, email: str, *, status: str = "active", amount: int | None = None) -> int:
        rid = len(self.rows) + 1
        created = (pay["created"] if pay else self.now - 86400) + 5
        self.rows.append(
            {
                "id": rid,
                "customer_email": email,
                "stripe_customer_id": pay["cus"] if pay else None,
                "stripe_checkout_session_id": pay["cs"] if pay else None,
                "stripe_payment_intent_id": None,
                "stripe_subscription_id": None,
                "plan": "annual",
                "amount": amount if amount is not None else (pay["amount"] if pay else 14900),
                "currency": "usd",
                "status": status,
                "created_at": iso(created),
                "activated_at": iso(created + 1) if status == "active" else None,
                "current_period_end": iso(self.now + 300 * 86400),
            }
        )
        return rid

    def write_app_db(self, url: str) -> None:
        create_default_schema(url)
        engine = create_engine(url)
        with engine.begin() as conn:
            for r in self.rows:
                conn.execute(
                    text(
                        f"INSERT INTO subscriptions ({','.join(r)}) VALUES ({','.join(':' + k for k in r)})"
                    ),
                    r,
                )
        engine.dispose()


def many_sessions(newest: int, n: int, *, start: int = 0) -> list[dict]:
    """`n` paid Checkout Sessions a minute apart, the newest created at `newest`, for paging tests."""
    return [
        paid_session(
            id=f"cs_many{start + i:07d}",
            amount_total=4900,
            customer_email=f"c{start + i}@example.com",
            created=newest - i * 60,
        )
        for i in range(n)
    ]


def known_cases(a: Account) -> tuple[set[tuple[str, str]], dict[str, dict]]:
    """The named cast of one case per payment finding kind, added to `a`: the (kind, payment id or
    row:ID) findings they must produce, and the payments by name (fine, never, pending, …)."""
    expect: set[tuple[str, str]] = set()
    fine = a.checkout_payment("alice@example.com")
    a.row(fine, "alice@example.com")
    never = a.checkout_payment("bob@example.com")
    expect.add(("paid_without_subscription", never["cs"]))
    pending = a.checkout_payment("carol@example.com")
    a.row(pending, "carol@example.com", status="pending")
    expect.add(("subscription_not_active", pending["cs"]))
    refunded = a.checkout_payment("dave@example.com", refunded=14900)
    a.row(refunded, "dave@example.com")
    expect.add(("refunded_but_active", refunded["cs"]))
    cheaper = a.checkout_payment("frank@example.com")
    a.row(cheaper, "frank@example.com", amount=9900)
    expect.add(("amount_mismatch", cheaper["cs"]))
    twice = a.checkout_payment("grace@example.com")
    a.row(twice, "grace@example.com")
    a.row(twice, "grace@example.com")
    expect.add(("duplicate_subscription", twice["cs"]))
    orphan = a.row(None, "heidi@example.com")
    expect.add(("active_without_payment", f"row:{orphan}"))
    a.checkout_payment("ivan@example.com", age_s=120)  # within the grace period
    pays = {"fine": fine, "never": never, "pending": pending, "refunded": refunded, "cheaper": cheaper}
    return expect, {**pays, "twice": twice}


def findings_of(report: dict, kinds=None) -> set[tuple[str, str]]:
    """The open findings of a report's JSON (of `kinds` only, if given) as `known_cases` names them: (kind,
    event id) for a webhook kind, else (kind, payment id or row:ID)."""
    found = set()
    for f in report["findings"]:
        if f["status"] != "open" or (kinds is not None and f["kind"] not in kinds):
            continue
        if f["kind"] in WEBHOOK_KINDS:
            found.add((f["kind"], f["event_id"]))
        else:
            found.add((f["kind"], f["payment_id"] or f"row:{f['subscription_ids'][0]}"))
    return found
