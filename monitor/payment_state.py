"""A payment as Stripe says it is right now, fetched live for a repair (never guessed from the snapshot).

A few retrieves and two filtered lists per payment, through `StripeSource` (plain JSON)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from monitor.stripe_rows import invoice_payment_intents, invoice_subscription, ref
from monitor.stripe_source import StripeSource

PREFIXES = {"cs_": "checkout_session", "in_": "invoice", "pi_": "payment_intent"}


@dataclass
class PaymentState:
    payment_id: str
    kind: str  # checkout_session | invoice | payment_intent
    paid: bool
    status: str  # Stripe's own words, e.g. "complete/paid", "paid", "succeeded"
    amount: int | None
    currency: str | None
    customer_id: str | None = None
    email: str | None = None
    checkout_session_id: str | None = None
    payment_intent_id: str | None = None
    # Every PaymentIntent of the payment (an invoice may be paid by several); refunds and disputes of
    # any of them count.
    payment_intent_ids: list[str] = field(default_factory=list)
    invoice_id: str | None = None
    stripe_subscription_id: str | None = None
    amount_refunded: int = 0
    disputes: list[str] = field(default_factory=list)  # statuses of the payment's disputes
    livemode: bool = False

    @property
    def fully_refunded(self) -> bool:
        return bool(self.amount) and self.amount_refunded >= self.amount

    def to_json(self) -> dict:
        return asdict(self)


def kind_of(payment_id: str) -> str | None:
    return next((kind for prefix, kind in PREFIXES.items() if payment_id.startswith(prefix)), None)


def fetch_payment_state(source: StripeSource, payment_id: str) -> PaymentState:
    """What Stripe says of `payment_id` now. Raises StripeRequestError (resource_missing) for an unknown
    id, and StripeError subclasses when Stripe cannot be asked."""
    kind = kind_of(payment_id)
    if kind == "checkout_session":
        state = _session(source, source.retrieve("checkout.session", payment_id))
    elif kind == "invoice":
        state = _invoice(source.get(f"/v1/invoices/{payment_id}", expand=["payments"]))
    elif kind == "payment_intent":
        state = _intent(source.retrieve("payment_intent", payment_id))
    else:
        raise ValueError(f"{payment_id!r} is not a Checkout Session, invoice or PaymentIntent id")
    if state.payment_intent_id and state.payment_intent_id not in state.payment_intent_ids:
        state.payment_intent_ids.insert(0, state.payment_intent_id)
    for intent in state.payment_intent_ids:
        _add_refunds_and_disputes(source, state, intent)
    if not state.email and state.customer_id:
        state.email = source.retrieve("customer", state.customer_id).get("email")
    return state


def _session(source: StripeSource, s: dict) -> PaymentState:
    # A subscription-mode session that needs no payment (a trial, a 100 %-off start) is a payment of 0.
    paid = s.get("payment_status") == "paid" or (
        s.get("payment_status") == "no_payment_required" and s.get("mode") == "subscription"
    )
    state = PaymentState(
        payment_id=s["id"],
        kind="checkout_session",
        paid=s.get("status") == "complete" and paid,
        status=f"{s.get('status')}/{s.get('payment_status')}",
        amount=s.get("amount_total"),
        currency=(s.get("currency") or "").lower() or None,
        customer_id=ref(s.get("customer")),
        email=(s.get("customer_details") or {}).get("email") or s.get("customer_email"),
        checkout_session_id=s["id"],
        payment_intent_id=ref(s.get("payment_intent")),
        invoice_id=ref(s.get("invoice")),
        stripe_subscription_id=ref(s.get("subscription")),
        livemode=bool(s.get("livemode")),
    )
    if state.invoice_id:
        invoice = source.get(f"/v1/invoices/{state.invoice_id}", expand=["payments"])
        state.payment_intent_ids = invoice_payment_intents(invoice)
        state.payment_intent_id = state.payment_intent_id or next(iter(state.payment_intent_ids), None)
    return state


def _invoice(i: dict) -> PaymentState:
    return PaymentState(
        payment_id=i["id"],
        kind="invoice",
        paid=i.get("status") == "paid",
        status=str(i.get("status")),
        amount=i.get("amount_paid"),
        currency=(i.get("currency") or "").lower() or None,
        customer_id=ref(i.get("customer")),
        email=i.get("customer_email"),
        invoice_id=i["id"],
        payment_intent_id=next(iter(invoice_payment_intents(i)), None),
        payment_intent_ids=invoice_payment_intents(i),
        stripe_subscription_id=invoice_subscription(i),
        livemode=bool(i.get("livemode")),
    )


def _intent(p: dict) -> PaymentState:
    return PaymentState(
        payment_id=p["id"],
        kind="payment_intent",
        paid=p.get("status") == "succeeded",
        status=str(p.get("status")),
        amount=p.get("amount_received"),
        currency=(p.get("currency") or "").lower() or None,
        customer_id=ref(p.get("customer")),
        email=p.get("receipt_email"),
        payment_intent_id=p["id"],
        livemode=bool(p.get("livemode")),
    )


def _add_refunds_and_disputes(source: StripeSource, state: PaymentState, intent: str) -> None:
    """Add what was refunded of, and the disputes of, one of the payment's PaymentIntents."""
    charges = source.get("/v1/charges", payment_intent=intent, limit=100).get("data") or []
    refunds = source.get("/v1/refunds", payment_intent=intent, limit=100).get("data") or []
    refunded = sum(r.get("amount") or 0 for r in refunds if r.get("status") in ("succeeded", "pending"))
    state.amount_refunded += max(refunded, sum(c.get("amount_refunded") or 0 for c in charges))
    disputes = source.get("/v1/disputes", payment_intent=intent, limit=100).get("data") or []
    state.disputes += [d.get("status") or "unknown" for d in disputes]
