"""The demo scenario: a month of a small SaaS's Stripe traffic around the incident of DESIGN.md.

`build_demo(anchor)` returns the Stripe objects the emulator serves, the app's `subscriptions` rows and
its webhook log, all derived from `anchor` (the scenario's "now") and a seed, so every process that
rebuilds it gets the same objects and ids. `ensure_demo_app_db(url)` writes the app side once and keeps
the anchor in the app database, which is how the CLI's commands agree on one scenario.

The story: ordinary one-time and subscription payments, each with the row the app made for it; about two
days before the anchor the webhook endpoint was moved from production to staging, so later events went
there (delivered, but absent from the app's log); two hours before the anchor a customer paid USD 149,
staging answered errors, and the app's manual fallback failed on Redis. Around that, one isolated
customer for every finding kind, listed in `Demo.cases`.
"""

from __future__ import annotations

import calendar
import copy
import random
import string
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import NamedTuple

from monitor.emulator.shapes import example, examples
from monitor.rules.webhook_health import REQUIRED_EVENT_TYPES

DEMO_EXPECTED_WEBHOOK_URL = "https://app.example-saas.com/stripe/webhook"
DEMO_STAGING_WEBHOOK_URL = "https://staging.example-saas.com/stripe/webhook"
DEMO_OLD_WEBHOOK_URL = "https://legacy.example-saas.com/webhooks/stripe"
INCIDENT_EMAIL = "dana.whitfield@example.com"
# redis-py's message for a refused connection to its default address (DESIGN.md "Lessons from the field").
REDIS_ERROR = "Error 111 connecting to localhost:6379. Connection refused."
API_VERSION = "2026-10-28.endive"
DEFAULT_SEED = 149
# The endpoint receives exactly the payment-relevant types the monitor requires.
ENABLED_EVENTS = list(REQUIRED_EVENT_TYPES)

DAY = 86400
HOUR = 3600
# Stripe lists events of the last 30 days only; older ones are not served (the app's own log keeps them).
EVENT_RETENTION = 30 * DAY
# Ordinary traffic stops this long before the anchor, so only the cases live inside the grace period.
QUIET_BEFORE_ANCHOR = 15 * 60
RENEWAL_DELAY = HOUR + 60
_ALPHANUMERIC = string.ascii_letters + string.digits
# Checkouts per hour of the day (UTC): quiet nights, busy working hours on both sides of the Atlantic.
_HOUR_WEIGHTS = [1, 1, 1, 1, 1, 2, 3, 4, 6, 7, 8, 8, 8, 9, 9, 9, 8, 7, 6, 5, 4, 3, 2, 1]
_FIRST_TEXT = """
Alex Amelia Ben Carla Chen Daniel Elena Ethan Fatima Felix Gabriel Hana Isaac Jade Jonas Julia Kai
Laura Leo Lina Luca Maya Mateo Mia Nadia Nico Nina Noah Olivia Oscar Paula Quinn Rafael Rosa Sam
Sara Simon Tara Theo Uma Victor Wen Yara Yusuf Zoe Aaron Bianca Clara David Emil Freya Hugo Ines
Jakob Kenji Lucia Marta Nora Pedro
"""
_FIRST = _FIRST_TEXT.split()
_LAST_TEXT = """
Abbott Andersen Baker Brooks Castillo Chen Costa Dubois Evans Ferreira Fischer Garcia Hansen Hughes
Ito Jensen Kaur Kim Kowalski Larsen Lopez Martin Meyer Moreno Nguyen Nielsen Novak Okoro Olsen Park
Patel Perez Quinn Reyes Rossi Russo Santos Schmidt Silva Singh Sousa Suzuki Takahashi Torres Vargas
Walsh Weber Wilson Wright Young Zhang Ali Becker Bauer Conti Dahl Eriksen
"""
_LAST = _LAST_TEXT.split()
_DOMAINS = ("example.com", "example.org", "example.net")


class Plan(NamedTuple):
    key: str  # the app's `plan` column
    name: str  # the product's name
    amount: int  # minor units
    currency: str
    interval: str | None  # None: one-time payment for a year of access; "month"/"year": a subscription


ONE_TIME_PLANS = (
    (Plan("starter_annual", "Starter (1 year)", 4900, "usd", None), 22),
    (Plan("pro_annual", "Pro (1 year)", 14900, "usd", None), 45),
    (Plan("team_annual", "Team (1 year)", 29900, "usd", None), 18),
    (Plan("pro_annual", "Pro (1 year)", 13900, "eur", None), 10),
    (Plan("pro_annual", "Pro (1 year)", 11900, "gbp", None), 5),
)
SUBSCRIPTION_PLANS = (
    (Plan("pro_monthly", "Pro (monthly)", 1900, "usd", "month"), 50),
    (Plan("team_monthly", "Team (monthly)", 4900, "usd", "month"), 25),
    (Plan("pro_monthly", "Pro (monthly)", 1700, "eur", "month"), 10),
    (Plan("pro_yearly", "Pro (yearly)", 14900, "usd", "year"), 15),
)
# Each case's customer, by case name; ordinary customers never take these addresses.
CASE_PEOPLE = {
    "incident": ("Dana Whitfield", INCIDENT_EMAIL),
    "weak_match": ("Priya Raman", "priya.raman@example.org"),
    "pending_row": ("Tomas Novak", "tomas.novak@example.net"),
    "renewal_not_extended": ("Lena Fischer", "lena.fischer@example.org"),
    "amount_mismatch": ("Marcus Bell", "marcus.bell@example.com"),
    "triple_fallback": ("Sofia Marin", "sofia.marin@example.com"),
    "orphan_row": ("Kevin Oduya", "kevin.oduya@example.net"),
    "refunded_active": ("Hannah Lindqvist", "hannah.lindqvist@example.org"),
    "dispute_lost": ("Omar Haddad", "omar.haddad@example.com"),
    "delivered_to_staging": ("Grace Okafor", "grace.okafor@example.com"),
    "partial_refund": ("Ivan Petrov", "ivan.petrov@example.net"),
    "open_dispute": ("Mei Tanaka", "mei.tanaka@example.org"),
    "within_grace": ("Lucas Moreau", "lucas.moreau@example.com"),
}
PRO_ANNUAL = ONE_TIME_PLANS[1][0]
STARTER_ANNUAL = ONE_TIME_PLANS[0][0]
TEAM_ANNUAL = ONE_TIME_PLANS[2][0]
PRO_MONTHLY = SUBSCRIPTION_PLANS[0][0]


@dataclass
class Demo:
    anchor: datetime  # the scenario's "now" (UTC, whole seconds)
    objects: list[dict]  # Stripe objects, oldest first
    rows: list[dict]  # the app's `subscriptions` rows (default schema), ids 1..n in order of creation
    webhook_log: list[dict]  # the app's `webhook_events` rows
    cases: dict[str, dict]  # case name -> the ids involved and the finding kinds it is meant to produce


def build_demo(anchor: datetime, seed: int = DEFAULT_SEED) -> Demo:
    """The demo scenario for `anchor`; the same anchor and seed always give identical output, ids too."""
    return _Scenario(_whole_utc(anchor), seed).build()


# --- time ----------------------------------------------------------------------------------------------


def _whole_utc(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).replace(microsecond=0)


def _add_months(ts: int, months: int) -> int:
    """`ts` moved by whole calendar months, the day clamped to the month's length (Stripe's billing)."""
    moment = datetime.fromtimestamp(ts, UTC)
    years, month0 = divmod(moment.month - 1 + months, 12)
    year, month = moment.year + years, month0 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return int(moment.replace(year=year, month=month, day=day).timestamp())


def _period_end(anchor_ts: int, interval: str | None, periods: int) -> int:
    """End of the `periods`-th period counted from a billing cycle anchor."""
    if interval is None:
        return anchor_ts + 365 * DAY * periods
    return _add_months(anchor_ts, periods * (12 if interval == "year" else 1))


def sql_timestamp(ts: int | datetime) -> str:
    """Naive UTC 'YYYY-MM-DD HH:MM:SS', the way the demo app database stores times."""
    moment = ts if isinstance(ts, datetime) else datetime.fromtimestamp(ts, UTC)
    return _whole_utc(moment).strftime("%Y-%m-%d %H:%M:%S")


# --- the scenario --------------------------------------------------------------------------------------


@dataclass
class _Payment:
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


class _Scenario:
    def __init__(self, anchor: datetime, seed: int):
        self.anchor = anchor
        self.now = int(anchor.timestamp())
        self.rng = random.Random(seed)
        # The moment the endpoint's URL was changed to staging: events from then on missed production.
        self.moved_at = self.now - 2 * DAY - self.rng.randint(2 * HOUR, 5 * HOUR)
        self.objects: list[dict] = []
        self.rows: list[dict] = []
        self.log: list[dict] = []
        self.cases: dict[str, dict] = {}
        self._case_rows: dict[str, list[dict]] = {}
        self.emails: set[str] = {email for _, email in CASE_PEOPLE.values()}
        self.prices: dict[Plan, tuple[str, str]] = {}

    # ids and names

    def _id(self, prefix: str, length: int = 24) -> str:
        return prefix + "".join(self.rng.choices(_ALPHANUMERIC, k=length))

    def _person(self) -> tuple[str, str]:
        while True:
            first, last = self.rng.choice(_FIRST), self.rng.choice(_LAST)
            local = self.rng.choice((f"{first}.{last}", f"{first[0]}{last}", f"{first}_{last}", first + last))
            email = f"{local.lower()}@{self.rng.choice(_DOMAINS)}"
            if email not in self.emails:
                self.emails.add(email)
                return f"{first} {last}", email

    def _price(self, plan: Plan) -> tuple[str, str]:
        if plan not in self.prices:
            self.prices[plan] = (self._id("price_"), self._id("prod_", 14))
        return self.prices[plan]

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
        intent = example(
            "payment_intent",
            id=pi_id,
            amount=amount,
            amount_received=amount,
            amount_capturable=0,
            currency=currency,
            customer=customer["id"],
            description=description,
            status="succeeded",
            latest_charge=ch_id,
            payment_method=pm_id,
            created=at,
            canceled_at=None,
            last_payment_error=None,
            next_action=None,
            processing=None,
            transfer_data=None,
            receipt_email=customer["email"],
            client_secret=f"{pi_id}_secret_{self._id('', 25)}",
            automatic_payment_methods=None,
            livemode=False,
            metadata={},
        )
        details = copy.deepcopy(examples()["charge"]["payment_method_details"])
        details["card"]["last4"] = f"{self.rng.randint(0, 9999):04d}"
        details["card"]["brand"] = details["card"]["network"] = self.rng.choice(("visa", "mastercard"))
        billing = copy.deepcopy(examples()["charge"]["billing_details"])
        billing.update(email=customer["email"], name=customer["name"])
        charge = example(
            "charge",
            id=ch_id,
            amount=amount,
            amount_captured=amount,
            amount_refunded=0,
            refunded=False,
            disputed=False,
            captured=True,
            paid=True,
            status="succeeded",
            currency=currency,
            customer=customer["id"],
            payment_intent=pi_id,
            payment_method=pm_id,
            payment_method_details=details,
            billing_details=billing,
            description=description,
            balance_transaction=self._id("txn_"),
            created=at + 1,
            receipt_email=customer["email"],
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
            transfer_data=None,
            livemode=False,
            metadata={},
        )
        return self._add(intent), self._add(charge)

    def _session(self, customer: dict, plan: Plan, created: int, **fields) -> dict:
        details = copy.deepcopy(examples()["checkout.session"]["customer_details"])
        details.update(email=customer["email"], name=customer["name"])
        session = example(
            "checkout.session",
            id=self._id("cs_test_"),
            created=created,
            expires_at=created + DAY,
            status="complete",
            payment_status="paid",
            amount_subtotal=plan.amount,
            amount_total=plan.amount,
            currency=plan.currency,
            customer=customer["id"],
            customer_details=details,
            customer_email=None,
            livemode=False,
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
    ) -> _Payment:
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
        pay = _Payment(customer, plan, paid_at, session, intent, charge)
        pay.events.append(self._event("payment_intent.succeeded", intent, paid_at + 2))
        pay.events.append(self._event("checkout.session.completed", session, paid_at + 3, pending=pending))
        return pay

    def _invoice(
        self, pay: _Payment, sub: dict, created: int, paid_at: int, start: int, end: int, reason: str
    ) -> tuple[dict, dict, dict]:
        """A paid subscription invoice for the period [start, end], with its PaymentIntent and Charge."""
        customer, plan = pay.customer, pay.plan
        finalized = max(created, paid_at - 3)
        inv_id = self._id("in_")
        price_id, product_id = self._price(plan)
        intent, charge = self._intent_and_charge(
            customer,
            plan.amount,
            plan.currency,
            paid_at - 2,
            "Subscription creation" if reason == "subscription_create" else "Subscription update",
        )
        item = sub["items"]["data"][0]
        line = copy.deepcopy(examples()["invoice"]["lines"]["data"][0])
        line.update(
            id=self._id("il_"),
            amount=plan.amount,
            subtotal=plan.amount,
            currency=plan.currency,
            description=f"1 × {plan.name}",
            invoice=inv_id,
            period={"start": start, "end": end},
            subscription=sub["id"],
            taxes=[],
            pretax_credit_amounts=[],
            discount_amounts=[],
            parent={
                "type": "subscription_item_details",
                "invoice_item_details": None,
                "subscription_item_details": {
                    "invoice_item": None,
                    "proration": False,
                    "proration_details": {"credited_items": None},
                    "subscription": sub["id"],
                    "subscription_item": item["id"],
                },
            },
            pricing={
                "type": "price_details",
                "price_details": {"price": price_id, "product": product_id},
                "unit_amount_decimal": str(plan.amount),
            },
        )
        sequence = customer["next_invoice_sequence"]
        customer["next_invoice_sequence"] = sequence + 1
        invoice = example(
            "invoice",
            id=inv_id,
            account_name="Example SaaS Inc.",
            amount_due=plan.amount,
            amount_paid=plan.amount,
            amount_remaining=0,
            amount_overpaid=0,
            attempt_count=1,
            attempted=True,
            billing_reason=reason,
            created=created,
            currency=plan.currency,
            customer=customer["id"],
            customer_email=customer["email"],
            customer_name=customer["name"],
            customer_shipping=None,
            due_date=None,
            effective_at=finalized,
            ending_balance=0,
            from_invoice=None,
            hosted_invoice_url=f"https://invoice.stripe.com/i/acct_demo/{self._id('test_', 40)}",
            invoice_pdf=f"https://pay.stripe.com/invoice/acct_demo/{self._id('test_', 40)}/pdf",
            last_finalization_error=None,
            lines={
                "object": "list",
                "data": [line],
                "has_more": False,
                "url": f"/v1/invoices/{inv_id}/lines",
            },
            next_payment_attempt=None,
            number=f"{customer['invoice_prefix']}-{sequence:04d}",
            # Stripe's invoice period is the one *before* the period billed; the lines hold the one paid for.
            period_start=created if reason == "subscription_create" else _prev_start(sub, start),
            period_end=created if reason == "subscription_create" else start,
            shipping_cost=None,
            shipping_details=None,
            status="paid",
            status_transitions={
                "finalized_at": finalized,
                "marked_uncollectible_at": None,
                "paid_at": paid_at,
                "voided_at": None,
            },
            subscription=sub["id"],
            parent={
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"subscription": sub["id"], "metadata": {}},
            },
            payments={
                "object": "list",
                "data": [
                    example(
                        "invoice_payment",
                        id="inpay_" + inv_id[3:],  # from the invoice's id: no draw from the rng
                        amount_paid=plan.amount,
                        amount_requested=plan.amount,
                        created=finalized,
                        currency=plan.currency,
                        invoice=inv_id,
                        is_default=True,
                        livemode=False,
                        payment={"type": "payment_intent", "payment_intent": intent["id"]},
                        status="paid",
                        status_transitions={"canceled_at": None, "paid_at": paid_at},
                    )
                ],
                "has_more": False,
                "url": "/v1/invoice_payments",
            },
            subtotal=plan.amount,
            subtotal_excluding_tax=plan.amount,
            total=plan.amount,
            total_excluding_tax=plan.amount,
            total_taxes=[],
            total_pretax_credit_amounts=[],
            webhooks_delivered_at=created,
            livemode=False,
            metadata={},
        )
        self._add(invoice)
        pay.events.append(
            self._event(
                "payment_intent.succeeded", intent, paid_at, automatic=reason != "subscription_create"
            )
        )
        return invoice, intent, charge

    def subscribe(
        self, customer: dict, plan: Plan, started: int, renew_until: int, paid_at: int | None = None
    ) -> _Payment:
        """A subscription-mode Checkout Session with its Subscription (billing cycle anchored at the
        payment), first Invoice, and the renewals paid before `renew_until`."""
        paid_at = paid_at if paid_at is not None else started + self.rng.randint(40, 240)
        sub_id = self._id("sub_")
        price_id, product_id = self._price(plan)
        item = copy.deepcopy(examples()["subscription"]["items"]["data"][0])
        item["price"].update(
            id=price_id,
            product=product_id,
            currency=plan.currency,
            unit_amount=plan.amount,
            unit_amount_decimal=str(plan.amount),
            created=self.now - 400 * DAY,
            lookup_key=plan.key,
            nickname=plan.name,
            custom_unit_amount=None,
            transform_quantity=None,
            recurring={
                "interval": plan.interval,
                "interval_count": 1,
                "meter": None,
                "usage_type": "licensed",
                "trial_period_days": None,
            },
        )
        item["plan"].update(
            id=price_id,
            product=product_id,
            currency=plan.currency,
            amount=plan.amount,
            amount_decimal=str(plan.amount),
            billing_scheme="per_unit",
            created=self.now - 400 * DAY,
            interval=plan.interval,
            interval_count=1,
            livemode=False,
            metadata={},
            nickname=plan.name,
            transform_usage=None,
        )
        item.update(
            id=self._id("si_", 14),
            created=paid_at,
            subscription=sub_id,
            billing_thresholds=None,
            current_period_start=paid_at,
            current_period_end=_period_end(paid_at, plan.interval, 1),
        )
        sub = example(
            "subscription",
            id=sub_id,
            customer=customer["id"],
            created=paid_at,
            start_date=paid_at,
            billing_cycle_anchor=paid_at,
            billing_cycle_anchor_config=None,
            cancel_at=None,
            canceled_at=None,
            cancel_at_period_end=False,
            ended_at=None,
            trial_start=None,
            trial_end=None,
            currency=plan.currency,
            items={
                "object": "list",
                "data": [item],
                "has_more": False,
                "url": f"/v1/subscription_items?subscription={sub_id}",
            },
            status="active",
            next_pending_invoice_item_invoice=None,
            pause_collection=None,
            pending_invoice_item_interval=None,
            pending_update=None,
            billing_thresholds=None,
            billing_schedules=[],
            transfer_data=None,
            default_payment_method=None,
            livemode=False,
            metadata={},
        )
        self._add(sub)
        # The subscription and its first invoice start the period together; the card is charged just after.
        pay = _Payment(customer, plan, paid_at + 3, {}, {}, {}, subscription=sub)
        invoice, intent, charge = self._invoice(
            pay, sub, paid_at, paid_at + 3, paid_at, item["current_period_end"], "subscription_create"
        )
        sub["latest_invoice"] = invoice["id"]
        pay.invoice, pay.payment_intent, pay.charge = invoice, intent, charge
        pay.session = self._session(
            customer,
            plan,
            started,
            mode="subscription",
            payment_intent=None,
            subscription=sub_id,
            invoice=invoice["id"],
            customer_creation=None,
            invoice_creation=None,
            payment_method_collection="always",
        )
        pay.events.append(self._event("customer.subscription.created", sub, paid_at + 1))
        pay.events.append(self._event("invoice.paid", invoice, paid_at + 4))
        pay.events.append(self._event("checkout.session.completed", pay.session, paid_at + 5))
        periods = 1
        # Stripe opens the renewal invoice at the period's start and charges it about an hour later.
        while (renewal := _period_end(paid_at, plan.interval, periods)) + RENEWAL_DELAY < renew_until:
            periods += 1
            end = _period_end(paid_at, plan.interval, periods)
            previous = {
                "latest_invoice": sub["latest_invoice"],
                "items": {"data": [{k: item[k] for k in ("current_period_start", "current_period_end")}]},
            }
            due = renewal + RENEWAL_DELAY - self.rng.randint(0, 50)
            invoice, _, _ = self._invoice(pay, sub, renewal, due, renewal, end, "subscription_cycle")
            item.update(current_period_start=renewal, current_period_end=end)
            sub["latest_invoice"] = invoice["id"]
            pay.renewals.append(invoice)
            updated = self._event("customer.subscription.updated", sub, renewal + 1, automatic=True)
            updated["data"]["previous_attributes"] = previous
            pay.events.append(updated)
            pay.events.append(self._event("invoice.paid", invoice, due + 2, automatic=True))
        return pay

    def refund(self, pay: _Payment, amount: int, at: int) -> dict:
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

    def dispute(self, pay: _Payment, opened: int, reason: str, closed: int | None = None) -> dict:
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

    def row(self, pay: _Payment, *, by_ids: bool = True, status: str = "active", **fields) -> dict:
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

    def _paid_through(self, pay: _Payment) -> int:
        """The period end the app knows of: renewals whose invoice.paid reached production extend it."""
        if pay.subscription is None:
            return pay.paid_at + 365 * DAY
        end = pay.invoice["lines"]["data"][0]["period"]["end"]
        for invoice in pay.renewals:
            if invoice["status_transitions"]["paid_at"] < self.moved_at:
                end = invoice["lines"]["data"][0]["period"]["end"]
        return end

    # the month

    def ordinary_traffic(self) -> None:
        starts = []
        for day in range(30, 0, -1):
            day_start = self.now - day * DAY
            for _ in range(self.rng.randint(8, 15)):
                hour = self.rng.choices(range(24), weights=_HOUR_WEIGHTS)[0]
                started = day_start + hour * HOUR + self.rng.randrange(HOUR)
                if started < self.now - QUIET_BEFORE_ANCHOR - 300:
                    starts.append(started)
        # Monthly subscribers from the month before, whose first renewal falls inside the month shown.
        for _ in range(self.rng.randint(30, 42)):
            starts.append(self.now - self.rng.randint(34 * DAY, 57 * DAY))
        for started in sorted(starts):
            name, email = self._person()
            before = started < self.now - 30 * DAY
            plans = (
                SUBSCRIPTION_PLANS[:3] if before else self.rng.choice((ONE_TIME_PLANS, SUBSCRIPTION_PLANS))
            )
            plan = _weighted(self.rng, plans)
            if plan.interval == "month":
                # A renewal after the move to staging would never reach the app: a finding. Ordinary
                # traffic has none; the renewal_not_extended case is that story.
                first_renewal = _add_months(started, 1)
                if self.moved_at - 3 * HOUR <= first_renewal <= self.now + HOUR:
                    plan = _weighted(self.rng, ONE_TIME_PLANS)
            customer = self._customer(name, email, started + 30, plan.currency)
            if plan.interval is None:
                pay = self.one_time(customer, plan, started)
            else:
                pay = self.subscribe(customer, plan, started, renew_until=self.moved_at - HOUR)
            self.row(pay)

    def build(self) -> Demo:
        self.ordinary_traffic()
        self.build_cases()
        self._endpoints()
        self.objects.sort(key=lambda o: o["created"])
        self.rows.sort(key=lambda r: r["created_at"])
        for number, row in enumerate(self.rows, start=1):
            row["id"] = number
            for key in ("created_at", "activated_at", "current_period_end"):
                if row[key] is not None:
                    row[key] = sql_timestamp(row[key])
        self.log.sort(key=lambda r: (r["received_at"], r["stripe_event_id"]))
        for name, rows in self._case_rows.items():
            self.cases[name]["row_ids"] = [r["id"] for r in rows]
        self.cases["delivered_to_staging"]["all_missing_event_ids"] = [
            o["id"]
            for o in self.objects
            if o["object"] == "event"
            and o["type"] in ENABLED_EVENTS
            and o["pending_webhooks"] == 0
            and o["created"] >= self.moved_at
        ]
        return Demo(self.anchor, self.objects, self.rows, self.log, self.cases)

    def _endpoints(self) -> None:
        self.endpoints = [
            self._add(
                example(
                    "webhook_endpoint",
                    id=self._id("we_"),
                    url=DEMO_STAGING_WEBHOOK_URL,
                    status="enabled",
                    enabled_events=list(ENABLED_EVENTS),
                    description="app webhook (fulfilment)",
                    api_version=API_VERSION,
                    created=self.now - 240 * DAY,
                    livemode=False,
                    metadata={},
                )
            ),
            self._add(
                example(
                    "webhook_endpoint",
                    id=self._id("we_"),
                    url=DEMO_OLD_WEBHOOK_URL,
                    status="disabled",
                    enabled_events=["checkout.session.completed"],
                    description="old Heroku app",
                    api_version="2024-06-20",
                    created=self.now - 420 * DAY,
                    livemode=False,
                    metadata={},
                )
            ),
        ]
        self.cases["endpoint_at_staging"] = {
            "kinds": ["endpoint_misconfigured"],
            "email": None,
            "customer_id": None,
            "payment_id": None,
            "event_ids": [],
            "row_ids": [],
            "note": "the only enabled endpoint is at the staging URL; none at the production URL",
            "endpoint_ids": [e["id"] for e in self.endpoints],
            "expected_url": DEMO_EXPECTED_WEBHOOK_URL,
            "registered_url": DEMO_STAGING_WEBHOOK_URL,
            "moved_at": sql_timestamp(self.moved_at),
        }

    # the cases

    def _case(self, name: str, kinds: list[str], pay: _Payment, rows: list[dict], note: str, **extra) -> None:
        self._case_rows[name] = rows
        self.cases[name] = {
            "kinds": kinds,
            "email": pay.email,
            "customer_id": pay.customer["id"],
            # The payment a finding is about: the renewal invoice when there is one, else the session.
            "payment_id": pay.renewals[-1]["id"] if pay.renewals else pay.session["id"],
            "checkout_session_id": pay.session["id"],
            "payment_intent_id": pay.payment_intent["id"],
            "charge_id": pay.charge["id"],
            "subscription_id": pay.subscription["id"] if pay.subscription else None,
            "invoice_id": pay.invoice["id"] if pay.invoice else None,
            "amount": pay.plan.amount,
            "currency": pay.plan.currency,
            # Only the events Stripe still lists (30 days).
            "event_ids": [e["id"] for e in pay.events if e["created"] >= self.now - EVENT_RETENTION],
            "row_ids": [],
            "note": note,
            **extra,
        }

    def _case_customer(self, case: str, at: int, currency: str = "usd") -> dict:
        name, email = CASE_PEOPLE[case]
        return self._customer(name, email, at, currency)

    def build_cases(self) -> None:
        now = self.now
        # THE incident: paid two hours ago; staging answers errors; the manual fallback died on Redis.
        customer = self._case_customer("incident", now - 2 * HOUR - 100)
        pay = self.one_time(customer, PRO_ANNUAL, now - 2 * HOUR - 150, pending=1, paid_at=now - 2 * HOUR)
        completed = pay.events[-1]
        self.log.append(
            {
                "stripe_event_id": completed["id"],
                "type": "checkout.session.completed",
                "received_at": sql_timestamp(pay.paid_at + 41),
                "processed_at": None,
                "status": "failed",
                "error": REDIS_ERROR,
            }
        )
        self._case(
            "incident",
            ["paid_without_subscription", "webhook_undelivered", "webhook_failed"],
            pay,
            [],
            "USD 149 paid two hours ago; checkout.session.completed still pending at the staging endpoint; "
            "the app's manual fallback logged the event as failed on Redis; no subscription row",
            failed_event_id=completed["id"],
        )

        # Paid; the app's only row is a pending sign-up row with the e-mail and no Stripe ids.
        customer = self._case_customer("weak_match", now - 4 * DAY - 3 * HOUR)
        pay = self.one_time(customer, STARTER_ANNUAL, now - 4 * DAY - 3 * HOUR + 20)
        row = self.row(
            pay,
            by_ids=False,
            status="pending",
            created_at=pay.session["created"] - 600,
            current_period_end=None,
        )
        self._case(
            "weak_match",
            ["paid_without_subscription"],
            pay,
            [row],
            "the only row matches by e-mail alone (no Stripe ids, pending): a weak match the hint names",
        )

        customer = self._case_customer("pending_row", now - 6 * DAY - 5 * HOUR)
        pay = self.one_time(customer, PRO_ANNUAL, now - 6 * DAY - 5 * HOUR + 30)
        row = self.row(pay, status="pending")
        self._case(
            "pending_row",
            ["subscription_not_active"],
            pay,
            [row],
            "row linked by checkout session id, left pending: the activation step never ran",
        )

        # A monthly subscription renewed after the move to staging: invoice.paid never reached the app.
        # The billing day is taken from a month that has it, so the renewal falls exactly 20 h ago.
        renewal = now - 20 * HOUR
        months = next(k for k in (1, 2, 3) if _add_months(_add_months(renewal, -k), k) == renewal)
        paid_at = _add_months(renewal, -months)
        customer = self._case_customer("renewal_not_extended", paid_at - 100)
        pay = self.subscribe(customer, PRO_MONTHLY, paid_at - 120, renew_until=now, paid_at=paid_at)
        row = self.row(pay)
        self._case(
            "renewal_not_extended",
            ["period_not_extended", "webhook_missing"],
            pay,
            [row],
            "renewal invoice paid about 19 h ago, after the endpoint moved to staging; the row still ends "
            "at the old period end",
            renewal_invoice_id=pay.renewals[-1]["id"],
        )

        customer = self._case_customer("amount_mismatch", now - 14 * DAY - 2 * HOUR)
        pay = self.one_time(customer, PRO_ANNUAL, now - 14 * DAY - 2 * HOUR + 15)
        row = self.row(pay, amount=9900)
        self._case("amount_mismatch", ["amount_mismatch"], pay, [row], "paid 14900; the row says 9900")

        customer = self._case_customer("triple_fallback", now - 8 * DAY - 7 * HOUR)
        pay = self.one_time(customer, PRO_ANNUAL, now - 8 * DAY - 7 * HOUR + 25)
        first = self.row(pay, created_at=pay.paid_at + 4)
        second = self.row(pay, created_at=pay.paid_at + 6)
        self._case(
            "triple_fallback",
            ["duplicate_subscription"],
            pay,
            [first, second],
            "the webhook and the direct insert both created an active row for one checkout session",
        )

        # An active row behind which there is no payment: its checkout session id leads nowhere.
        customer = self._case_customer("orphan_row", now - 5 * DAY - 9 * HOUR)
        created = now - 5 * DAY - 9 * HOUR + 400
        orphan = {
            "id": None,
            "customer_email": customer["email"],
            "stripe_customer_id": customer["id"],
            "stripe_checkout_session_id": self._id("cs_test_"),
            "stripe_payment_intent_id": None,
            "stripe_subscription_id": None,
            "plan": PRO_ANNUAL.key,
            "amount": PRO_ANNUAL.amount,
            "currency": PRO_ANNUAL.currency,
            "status": "active",
            "created_at": created,
            "activated_at": created,
            "current_period_end": created + 365 * DAY,
        }
        self.rows.append(orphan)
        self._case_rows["orphan_row"] = [orphan]
        self.cases["orphan_row"] = {
            "kinds": ["active_without_payment"],
            "email": customer["email"],
            "customer_id": customer["id"],
            "payment_id": None,
            "event_ids": [],
            "row_ids": [],
            "note": "active row written by the fake-webhook fallback; its checkout session does not exist",
            "dangling_checkout_session_id": orphan["stripe_checkout_session_id"],
        }

        customer = self._case_customer("refunded_active", now - 12 * DAY)
        pay = self.one_time(customer, PRO_ANNUAL, now - 12 * DAY + 60)
        row = self.row(pay)
        refund = self.refund(pay, PRO_ANNUAL.amount, now - 9 * DAY)
        self._case(
            "refunded_active",
            ["refunded_but_active"],
            pay,
            [row],
            "fully refunded three days after paying; the row is still active",
            refund_id=refund["id"],
        )

        customer = self._case_customer("dispute_lost", now - 27 * DAY)
        pay = self.one_time(customer, TEAM_ANNUAL, now - 27 * DAY + 45)
        row = self.row(pay)
        dispute = self.dispute(pay, now - 21 * DAY, "fraudulent", closed=now - 4 * DAY)
        self._case(
            "dispute_lost",
            ["refunded_but_active"],
            pay,
            [row],
            "dispute lost four days ago; the row is still active",
            dispute_id=dispute["id"],
        )

        # After the move: delivered to staging, absent from the app's log; the success page made the row.
        customer = self._case_customer("delivered_to_staging", now - 26 * HOUR)
        pay = self.one_time(customer, PRO_ANNUAL, now - 26 * HOUR + 10)
        row = self.row(pay, created_at=pay.paid_at + 9)
        self._case(
            "delivered_to_staging",
            ["webhook_missing"],
            pay,
            [row],
            "checkout.session.completed delivered (to staging) but absent from the app's log; "
            "all_missing_event_ids lists every such event of the scenario",
        )

        customer = self._case_customer("partial_refund", now - 9 * DAY)
        pay = self.one_time(customer, TEAM_ANNUAL, now - 9 * DAY + 30)
        row = self.row(pay)
        refund = self.refund(pay, 10000, now - 8 * DAY)
        self._case(
            "partial_refund",
            [],
            pay,
            [row],
            "10000 of 29900 refunded; the row stays active: fine",
            refund_id=refund["id"],
        )

        customer = self._case_customer("open_dispute", now - 16 * DAY)
        pay = self.one_time(customer, PRO_ANNUAL, now - 16 * DAY + 35)
        row = self.row(pay)
        dispute = self.dispute(pay, now - 5 * DAY, "product_not_received")
        self._case(
            "open_dispute",
            [],
            pay,
            [row],
            "dispute awaiting a response, not lost: fine",
            dispute_id=dispute["id"],
        )

        # Paid two minutes ago, its event still on its way: inside the grace period, nothing to report.
        customer = self._case_customer("within_grace", now - 200)
        pay = self.one_time(customer, PRO_ANNUAL, now - 240, pending=1, paid_at=now - 120)
        self._case("within_grace", [], pay, [], "paid two minutes ago; no row yet, event still pending: fine")


def _prev_start(sub: dict, start: int) -> int:
    interval = sub["items"]["data"][0]["price"]["recurring"]["interval"]
    return _add_months(start, -12 if interval == "year" else -1)


def _weighted(rng: random.Random, plans) -> Plan:
    return rng.choices([p for p, _ in plans], weights=[w for _, w in plans])[0]


# --- the demo app database -----------------------------------------------------------------------------


def ensure_demo_app_db(url: str, now: datetime | None = None) -> datetime:
    """Create the demo app database at `url` unless it exists; return the scenario's anchor.

    A new database gets the default schema, the rows and webhook log of `build_demo(anchor)` with anchor
    = `now` (default: the current UTC minute), and keeps the anchor (monitor.app_db.ensure_demo_database).
    """
    from monitor.app_db import ensure_demo_database

    anchor = _whole_utc(now) if now else datetime.now(UTC).replace(second=0, microsecond=0)

    def build(at: datetime) -> tuple[list, list]:
        demo = build_demo(at)
        return demo.rows, demo.webhook_log

    return ensure_demo_database(url, anchor, build)
