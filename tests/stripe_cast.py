"""A small Stripe account built case by case from Stripe's published examples, plus the app's rows for it.

Shared by the sync, store and end-to-end tests. Every object is a copy of Stripe's example of its type
with the fields of the case written over it, so it has the shape the real API returns.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import create_engine, text

from monitor.app_db import create_default_schema
from monitor.emulator.shapes import example


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
        pi, ch, cs, evt = self.id("pi"), self.id("ch"), self.id("cs"), self.id("evt")
        self.objects.append(
            example(
                "payment_intent",
                id=pi,
                amount=amount,
                amount_received=amount,
                currency="usd",
                status="succeeded",
                customer=cus,
                latest_charge=ch,
                created=created,
                livemode=False,
            )
        )
        self.objects.append(
            example(
                "charge",
                id=ch,
                amount=amount,
                amount_refunded=refunded,
                refunded=refunded >= amount,
                disputed=dispute is not None,
                paid=True,
                captured=True,
                status="succeeded",
                currency="usd",
                customer=cus,
                payment_intent=pi,
                created=created,
                livemode=False,
            )
        )
        details = dict(example("checkout.session")["customer_details"], email=email)
        session = example(
            "checkout.session",
            id=cs,
            status="complete",
            payment_status="paid",
            mode="payment",
            amount_total=amount,
            currency="usd",
            customer=cus,
            customer_details=details,
            customer_email=None,
            payment_intent=pi,
            subscription=None,
            invoice=None,
            created=created,
            livemode=False,
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
            self.objects.append(
                example(
                    "refund",
                    id=self.id("re"),
                    amount=refunded,
                    charge=ch,
                    payment_intent=pi,
                    currency="usd",
                    status="succeeded",
                    created=created + 60,
                )
            )
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
        example(
            "checkout.session",
            id=f"cs_many{start + i:07d}",
            status="complete",
            payment_status="paid",
            mode="payment",
            amount_total=4900,
            currency="usd",
            customer=None,
            customer_email=f"c{start + i}@example.com",
            payment_intent=None,
            subscription=None,
            invoice=None,
            created=newest - i * 60,
            livemode=False,
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
