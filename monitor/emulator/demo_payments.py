"""The demo's Stripe objects for one payment, shaped like Stripe's and consistent with each other: the
customer, the Checkout Session, PaymentIntent and Charge of a one-time payment, its refunds and disputes, the
events announcing each, and the row the app writes for it. Subscriptions build on this
(monitor.emulator.demo_subscriptions); the scenario that uses both is monitor.emulator.demo.

Every id and every choice is drawn from one seeded `random.Random`, in the order the scenario asks for
objects, so that the same anchor and seed always give the same objects.
"""

from __future__ import annotations

import calendar
import copy
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from monitor.emulator.shapes import (
    example,
    examples,
    paid_charge,
    paid_intent,
    paid_session,
    session_customer_details,
)
from monitor.rules.webhook_health import REQUIRED_EVENT_TYPES

API_VERSION = "2026-10-28.endive"
# The endpoint receives exactly the payment-relevant types the monitor requires.
ENABLED_EVENTS = list(REQUIRED_EVENT_TYPES)

DAY = 86400
HOUR = 3600
# Stripe lists events of the last 30 days only; older ones are not served (the app's own log keeps them).
EVENT_RETENTION = 30 * DAY
_ALPHANUMERIC = string.ascii_letters + string.digits


class Plan(NamedTuple):
    key: str  # the app's `plan` column
    name: str  # the product's name
    amount: int  # minor units
    currency: str
    interval: str | None  # None: one-time payment for a year of access; "month"/"year": a subscription


# --- time ----------------------------------------------------------------------------------------------


def whole_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def add_months(ts: int, months: int) -> int:
    """`ts` moved by whole calendar months, the day clamped to the month's length (Stripe's billing)."""
    moment = datetime.fromtimestamp(ts, UTC)
    years, month0 = divmod(moment.month - 1 + months, 12)
    year, month = moment.year + years, month0 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def sql_timestamp(ts: int | datetime) -> str:
    """Naive UTC 'YYYY-MM-DD HH:MM:SS', the way the demo app database stores times."""
    moment = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return whole_utc(moment).strftime("%Y-%m-%d %H:%M:%S")


# --- one payment's objects -----------------------------------------------------------------------------


@dataclass
class Payment:
    """The objects of one payment, kept together so cases can modify them afterwards."""

    customer: dict
    plan: Plan
    paid_at: int
    session: dict
    payment_intent: dict
    charge: dict
    subscription: dict | None = None
    invoice: dict | None = None
    events: list[dict] = field(default_factory=list)
    renewals: list[dict] = field(default_factory=list)  # renewal invoices, oldest first

    @property
    def email(self) -> str:
        return self.customer["email"]


class PaymentBuilder:
    """Makes the Stripe objects of payments (`objects`), the app's rows for them (`rows`) and its webhook log
    (`log`), all around `anchor`, the scenario's "now"."""

    def __init__(self, anchor: datetime, seed: int):
        self.anchor = anchor
        self.now = int(anchor.timestamp())
        self.rng = random.Random(seed)
        # The moment the endpoint's URL was changed to staging: events from then on missed production.
        self.moved_at = self.now - 2 * DAY - self.rng.randint(2 * HOUR, 5 * HOUR)
        self.objects: list[dict] = []
        self.rows: list[dict] = []
        self.log: list[dict] = []

    # ids

    def _id(self, prefix: str, length: int = 24) -> str:
        return prefix + "".join(self.rng.choices(_ALPHANUMERIC, k=length))

    # objects

    def _add(self, obj: dict) -> dict:
        self.objects.append(obj)
        return obj

    def _event(self, kind: str, obj: dict, created: int, pending: int = 0, automatic: bool = False) -> dict:
        """An event carrying a snapshot of `obj` now; the app's log gets it when production received it."""
        evt = example(
            "event",
            id=self._id("evt_"),
            type=kind,
            created=created,
            api_version=API_VERSION,
            livemode=False,
            pending_webhooks=pending,
            data={"object": copy.deepcopy(obj)},
            # Stripe leaves `request.id` empty for events it starts itself (renewals).
            request={"id": None if automatic else self._id("req_", 14), "idempotency_key": None},
        )
        if created >= self.now - EVENT_RETENTION:
            self._add(evt)
        if kind in ENABLED_EVENTS and pending == 0 and created < self.moved_at:
            received = created + self.rng.randint(1, 3)
            self.log.append(
                {
                    "stripe_event_id": evt["id"],
                    "type": kind,
                    "received_at": sql_timestamp(received),
                    "processed_at": sql_timestamp(received + self.rng.randint(0, 2)),
                    "status": "processed",
                    "error": None,
                }
            )
        return evt

    def _customer(self, name: str, email: str, created: int, currency: str) -> dict:
        return self._add(
            example(
                "customer",
                id=self._id("cus_", 14),
                email=email,
                name=name,
                created=created,
                currency=currency,
                discount=None,
                shipping=None,
                livemode=False,
                metadata={},
                invoice_prefix="".join(self.rng.choices("0123456789ABCDEF", k=8)),
                next_invoice_sequence=1,
            )
        )

    def _intent_and_charge(self, customer: dict, amount: int, currency: str, at: int, description: str):
        pi_id, ch_id, pm_id = self._id("pi_"), self._id("ch_"), self._id("pm_")
        # What the PaymentIntent and its Charge both say of the payment.
        shared = {
            "currency": currency,
            "customer": customer["id"],
            "description": description,
            "payment_method": pm_id,
            "receipt_email": customer["email"],
            "transfer_data": None,
        }
        intent = paid_intent(
            amount,
            ch_id,
            id=pi_id,
            amount_capturable=0,
            created=at,
            canceled_at=None,
            last_payment_error=None,
            next_action=None,
            processing=None,
            client_secret=f"{pi_id}_secret_{self._id('', 25)}",
            automatic_payment_methods=None,
            metadata={},
            **shared,
        )
        details = copy.deepcopy(examples()["charge"]["payment_method_details"])
        details["card"]["last4"] = f"{self.rng.randint(0, 9999):04d}"
        details["card"]["brand"] = details["card"]["network"] = self.rng.choice(("visa", "mastercard"))
        billing = copy.deepcopy(examples()["charge"]["billing_details"])
        billing.update(email=customer["email"], name=customer["name"])
        charge = paid_charge(
            amount,
            pi_id,
            id=ch_id,
            amount_captured=amount,
            payment_method_details=details,
            billing_details=billing,
            balance_transaction=self._id("txn_"),
            created=at + 1,
            receipt_url=f"https://pay.stripe.com/receipts/payment/{self._id('', 40)}",
            refunds={"object": "list", "data": [], "has_more": False, "url": f"/v1/charges/{ch_id}/refunds"},
            outcome={
                "advice_code": None,
                "network_advice_code": None,
                "network_decline_code": None,
                "network_status": "approved_by_network",
                "reason": None,
                "risk_level": "normal",
                "seller_message": "Payment complete.",
                "type": "authorized",
            },
            source=None,
            metadata={},
            **shared,
        )
        return self._add(intent), self._add(charge)

    def _session(self, customer: dict, plan: Plan, created: int, **fields) -> dict:
        session = paid_session(
            id=self._id("cs_test_"),
            created=created,
            expires_at=created + DAY,
            amount_subtotal=plan.amount,
            amount_total=plan.amount,
            currency=plan.currency,
            customer=customer["id"],
            customer_details=session_customer_details(email=customer["email"], name=customer["name"]),
            metadata={"plan": plan.key},
            success_url="https://app.example-saas.com/billing/success?session_id={CHECKOUT_SESSION_ID}",
            cancel_url="https://app.example-saas.com/pricing",
            url=None,
            after_expiration=None,
            consent=None,
            consent_collection=None,
            custom_text={
                "after_submit": None,
                "shipping_address": None,
                "submit": None,
                "terms_of_service_acceptance": None,
            },
            shipping_address_collection=None,
            shipping_cost=None,
            total_details={"amount_discount": 0, "amount_shipping": 0, "amount_tax": 0},
            currency_conversion=None,
            collected_information=None,
            payment_method_configuration_details=None,
            saved_payment_method_options=None,
            automatic_tax={"enabled": False, "liability": None, "status": None, "provider": None},
        )
        session.update(fields)
        return self._add(session)

    def one_time(
        self, customer: dict, plan: Plan, started: int, pending: int = 0, paid_at: int | None = None
    ) -> Payment:
        """A paid one-time Checkout Session: session, PaymentIntent, Charge and their events.
        `pending` is the checkout.session.completed event's pending_webhooks."""
        paid_at = paid_at if paid_at is not None else started + self.rng.randint(40, 240)
        intent, charge = self._intent_and_charge(customer, plan.amount, plan.currency, paid_at, plan.name)
        session = self._session(
            customer,
            plan,
            started,
            mode="payment",
            payment_intent=intent["id"],
            subscription=None,
            invoice=None,
            customer_creation="always",
            payment_method_collection=None,
        )
        pay = Payment(customer, plan, paid_at, session, intent, charge)
        pay.events.append(self._event("payment_intent.succeeded", intent, paid_at + 2))
        pay.events.append(self._event("checkout.session.completed", session, paid_at + 3, pending=pending))
        return pay

    def refund(self, pay: Payment, amount: int, at: int) -> dict:
        charge = pay.charge
        refund = self._add(
            example(
                "refund",
                id=self._id("re_"),
                amount=amount,
                charge=charge["id"],
                payment_intent=pay.payment_intent["id"],
                currency=charge["currency"],
                customer=pay.customer["id"],
                payment_method=charge["payment_method"],
                status="succeeded",
                reason="requested_by_customer",
                balance_transaction=self._id("txn_"),
                created=at,
                metadata={},
            )
        )
        charge["amount_refunded"] += amount
        charge["refunded"] = charge["amount_refunded"] >= charge["amount"]
        charge["refunds"]["data"].insert(0, copy.deepcopy(refund))
        pay.events.append(self._event("charge.refunded", charge, at + 1))
        return refund

    def dispute(self, pay: Payment, opened: int, reason: str, closed: int | None = None) -> dict:
        charge = pay.charge
        charge["disputed"] = True
        dispute = self._add(
            example(
                "dispute",
                id=self._id("dp_"),
                amount=charge["amount"],
                charge=charge["id"],
                payment_intent=pay.payment_intent["id"],
                currency=charge["currency"],
                reason=reason,
                status="needs_response",
                created=opened,
                evidence_details={
                    "due_by": opened + 8 * DAY,
                    "has_evidence": False,
                    "past_due": False,
                    "submission_count": 0,
                    "enhanced_eligibility": {},
                },
                is_charge_refundable=False,
                enhanced_eligibility_types=[],
                livemode=False,
                metadata={},
            )
        )
        pay.events.append(self._event("charge.dispute.created", dispute, opened + 1))
        if closed is not None:
            dispute["status"] = "lost"
            dispute["evidence_details"]["past_due"] = True
            pay.events.append(self._event("charge.dispute.closed", dispute, closed))
        return dispute

    # the app's rows

    def row(self, pay: Payment, *, by_ids: bool = True, status: str = "active", **fields) -> dict:
        """The app's row for a payment as its webhook handler (or success-page fallback) writes it;
        `fields` override columns (times as epoch seconds)."""
        created = pay.paid_at + self.rng.randint(2, 8)
        row = {
            "id": None,
            "customer_email": pay.email,
            "stripe_customer_id": pay.customer["id"] if by_ids else None,
            "stripe_checkout_session_id": pay.session["id"] if by_ids else None,
            "stripe_payment_intent_id": pay.payment_intent["id"] if by_ids and not pay.subscription else None,
            "stripe_subscription_id": pay.subscription["id"] if by_ids and pay.subscription else None,
            "plan": pay.plan.key,
            "amount": pay.plan.amount,
            "currency": pay.plan.currency,
            "status": status,
            "created_at": created,
            "activated_at": created if status in ("active", "trialing") else None,
            "current_period_end": self._paid_through(pay),
        }
        row.update(fields)
        if "created_at" in fields and status in ("active", "trialing"):
            row["activated_at"] = row["created_at"]
        self.rows.append(row)
        return row

    def _paid_through(self, pay: Payment) -> int:
        """The period end the app knows of: renewals whose invoice.paid reached production extend it."""
        if pay.subscription is None:
            return pay.paid_at + 365 * DAY
        end = pay.invoice["lines"]["data"][0]["period"]["end"]
        for invoice in pay.renewals:
            if invoice["status_transitions"]["paid_at"] < self.moved_at:
                end = invoice["lines"]["data"][0]["period"]["end"]
        return end
