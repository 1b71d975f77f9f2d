"""A payment as Stripe says it is right now, fetched live for a repair (never guessed from the snapshot), and
the rule that names a payment whichever of its ids was given (`canonical_id`).

A few retrieves and filtered lists per payment, through `StripeSource` (plain JSON)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field

from monitor.store.rows import invoice_payment_intents, invoice_subscription, ref
from monitor.stripe_api.source import StripeSource

# In order of precedence: a session's invoice and intents are the session's payment, and an invoice's
# intents the invoice's.
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

    def ids(self) -> list[str]:
        """Every id Stripe gave of this payment: its own first, then its session, invoice and intents."""
        found = [self.payment_id, self.checkout_session_id, self.invoice_id, self.payment_intent_id]
        return list(dict.fromkeys(i for i in [*found, *self.payment_intent_ids] if i))


def kind_of(payment_id: str) -> str | None:
    return next((kind for prefix, kind in PREFIXES.items() if payment_id.startswith(prefix)), None)


def canonical_id(given: str, known: Iterable[str | None] = ()) -> str:
    """The one id a payment is claimed, locked and recorded by, whichever of its ids (`cs_`, `in_`, `pi_`)
    was `given`: the id its row in the store's `payments` table has (`payment_id`).

    `known` holds the other ids known to be of the same payment: what Stripe says of it live (its session,
    invoice and intents, `PaymentState.ids`) and the `payment_id` of the store's rows that name any of them
    (`repair.stored_payment_ids`). Of `given` and those, a Checkout Session's id wins over an invoice's,
    and an invoice's over a PaymentIntent's (PREFIXES' order, as the `payment_sources` view decides what a
    payment is); among ids of one kind the smallest, so every caller gets the same answer. Ids of other
    kinds and missing ones are ignored. Live ids come first in a repair, so an id the store has not synced
    yet (or still holds as a payment of its own) resolves as its siblings do."""
    candidates = {i for i in (given, *known) if i and kind_of(i)}
    rank = {prefix: n for n, prefix in enumerate(PREFIXES)}
    return min(candidates, key=lambda i: (rank[i[:3]], i), default=given)


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
    _add_owners(source, state)
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


def _add_owners(source: StripeSource, state: PaymentState) -> None:
    """The session and invoice an intent or invoice belongs to, asked of Stripe, so that a repair by any of a
    payment's ids finds the same payment before the store has synced it. A session names its own."""
    if state.kind == "payment_intent":
        sessions = source.get("/v1/checkout/sessions", payment_intent=state.payment_id, limit=10)
        state.checkout_session_id = min((s["id"] for s in sessions.get("data") or []), default=None)
        invoice = None if state.checkout_session_id else _invoice_paid_by(source, state)
        if invoice is not None:
            state.invoice_id = invoice["id"]
            state.checkout_session_id = _session_naming(source, invoice["id"], invoice_subscription(invoice))
    elif state.kind == "invoice":
        state.checkout_session_id = _session_naming(source, state.payment_id, state.stripe_subscription_id)


def _invoice_paid_by(source: StripeSource, state: PaymentState) -> dict | None:
    """The invoice this intent paid (one of its `payments`). API versions before 2025-03-31.basil name it on
    the intent; later ones do not (docs.stripe.com/changelog/basil/2025-03-31/add-support-for-multiple-
    partial-payments-on-invoices), and it is looked for among its customer's newest 100 invoices."""
    if state.invoice_id:
        return source.get(f"/v1/invoices/{state.invoice_id}")
    if not state.customer_id:
        return None
    invoices = source.get("/v1/invoices", customer=state.customer_id, limit=100, expand=["data.payments"])
    paid = (i for i in invoices.get("data") or [] if state.payment_id in invoice_payment_intents(i))
    return next(paid, None)


def _session_naming(source: StripeSource, invoice_id: str, subscription_id: str | None) -> str | None:
    """The Checkout Session that names this invoice: the first invoice of the subscription it started.
    Stripe lists sessions by subscription, not by invoice; a renewal is named by none."""
    if not subscription_id:
        return None
    sessions = source.get("/v1/checkout/sessions", subscription=subscription_id, limit=100)
    named = (s["id"] for s in sessions.get("data") or [] if ref(s.get("invoice")) == invoice_id)
    return min(named, default=None)


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
        invoice_id=ref(p.get("invoice")),  # API versions before 2025-03-31.basil
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
