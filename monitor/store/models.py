"""The monitor's own store: SQLAlchemy 2 models. The schema itself is managed by Alembic (monitor/migrations).

Stripe objects are kept one table per type, with the columns reconciliation needs plus the raw JSON as
the API returned it. `(snapshot_at, snapshot_seq)` says how fresh a row's copy is: a list fetch stamps the
fetch time (unix seconds) with seq 0; an event's `data.object` stamps the event's time with a seq that puts
events of one second in Stripe's own order (monitor.store.rows.EVENT_SEQ_TOP), and an upsert never
replaces a fresher copy with an older one. What counts as a payment is the `payment_sources` view over sessions, invoices and
payment intents (DESIGN.md "What counts as a payment"); the `payments` table is that view materialised
with each payment's refunds, dispute, Stripe subscription status and event (monitor/store/payment_table.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    BigInteger,
    Boolean,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator):
    """A timezone-aware UTC datetime on every backend (SQLite keeps naive text, so we add UTC back)."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value, dialect):
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(
        naming_convention={
            "ix": "ix_%(table_name)s_%(column_0_N_name)s",
            "uq": "uq_%(table_name)s_%(column_0_N_name)s",
            "pk": "pk_%(table_name)s",
        }
    )


def _id() -> Mapped[str]:
    return mapped_column(String(255), primary_key=True)


def _ref() -> Mapped[str | None]:
    return mapped_column(String(255), nullable=True)


class _StripeObject:
    """Columns every stored Stripe object has."""

    id: Mapped[str] = _id()
    created: Mapped[int] = mapped_column(BigInteger, index=True)
    livemode: Mapped[bool] = mapped_column(Boolean, default=False)
    snapshot_at: Mapped[int] = mapped_column(BigInteger)
    snapshot_seq: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    raw: Mapped[str] = mapped_column(Text)


class CheckoutSession(_StripeObject, Base):
    __tablename__ = "stripe_checkout_sessions"
    status: Mapped[str | None] = mapped_column(String(32))
    payment_status: Mapped[str | None] = mapped_column(String(32))
    mode: Mapped[str | None] = mapped_column(String(32))
    amount_total: Mapped[int | None] = mapped_column(BigInteger)
    amount_subtotal: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    customer_id: Mapped[str | None] = _ref()
    customer_email: Mapped[str | None] = mapped_column(Text)
    payment_intent_id: Mapped[str | None] = _ref()
    invoice_id: Mapped[str | None] = _ref()
    subscription_id: Mapped[str | None] = _ref()
    __table_args__ = (
        Index(None, "payment_intent_id"),
        Index(None, "invoice_id"),
        Index(None, "customer_id"),
    )


class Invoice(_StripeObject, Base):
    __tablename__ = "stripe_invoices"
    status: Mapped[str | None] = mapped_column(String(32))
    customer_id: Mapped[str | None] = _ref()
    customer_email: Mapped[str | None] = mapped_column(Text)
    subscription_id: Mapped[str | None] = _ref()
    payment_intent_id: Mapped[str | None] = _ref()
    amount_paid: Mapped[int | None] = mapped_column(BigInteger)
    subtotal: Mapped[int | None] = mapped_column(BigInteger)
    total: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    billing_reason: Mapped[str | None] = mapped_column(String(64))
    line_period_end: Mapped[int | None] = mapped_column(BigInteger)
    paid_at: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (Index(None, "payment_intent_id"), Index(None, "subscription_id"))


class InvoicePayment(_StripeObject, Base):
    """One payment attempt of an invoice (`invoice.payments`, API 2025-03-31 and later): from an invoices
    page fetched with `expand[]=data.payments`, from `invoice_payment.*` events, or made from an older
    invoice's top-level `payment_intent`. Kept apart from the invoice, so an event's copy of the invoice,
    which never carries `payments`, cannot take them away."""

    __tablename__ = "stripe_invoice_payments"
    invoice_id: Mapped[str | None] = _ref()
    payment_intent_id: Mapped[str | None] = _ref()
    status: Mapped[str | None] = mapped_column(String(32))
    amount_paid: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    __table_args__ = (Index(None, "invoice_id"), Index(None, "payment_intent_id"))


class PaymentIntent(_StripeObject, Base):
    __tablename__ = "stripe_payment_intents"
    status: Mapped[str | None] = mapped_column(String(32))
    amount: Mapped[int | None] = mapped_column(BigInteger)
    amount_received: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    customer_id: Mapped[str | None] = _ref()
    receipt_email: Mapped[str | None] = mapped_column(Text)
    invoice_id: Mapped[str | None] = _ref()
    latest_charge: Mapped[str | None] = _ref()


class Charge(_StripeObject, Base):
    __tablename__ = "stripe_charges"
    payment_intent_id: Mapped[str | None] = _ref()
    amount: Mapped[int | None] = mapped_column(BigInteger)
    amount_refunded: Mapped[int | None] = mapped_column(BigInteger)
    refunded: Mapped[bool | None] = mapped_column(Boolean)
    disputed: Mapped[bool | None] = mapped_column(Boolean)
    __table_args__ = (Index(None, "payment_intent_id"),)


class Refund(_StripeObject, Base):
    __tablename__ = "stripe_refunds"
    charge_id: Mapped[str | None] = _ref()
    payment_intent_id: Mapped[str | None] = _ref()
    amount: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str | None] = mapped_column(String(32))


class Dispute(_StripeObject, Base):
    __tablename__ = "stripe_disputes"
    charge_id: Mapped[str | None] = _ref()
    payment_intent_id: Mapped[str | None] = _ref()
    amount: Mapped[int | None] = mapped_column(BigInteger)
    status: Mapped[str | None] = mapped_column(String(32))


class Customer(_StripeObject, Base):
    __tablename__ = "stripe_customers"
    email: Mapped[str | None] = mapped_column(Text)
    name: Mapped[str | None] = mapped_column(Text)
    __table_args__ = (Index(None, "email"),)


class Subscription(_StripeObject, Base):
    __tablename__ = "stripe_subscriptions"
    customer_id: Mapped[str | None] = _ref()
    status: Mapped[str | None] = mapped_column(String(32))
    current_period_end: Mapped[int | None] = mapped_column(BigInteger)


class Event(_StripeObject, Base):
    __tablename__ = "stripe_events"
    type: Mapped[str] = mapped_column(String(128))
    pending_webhooks: Mapped[int] = mapped_column(Integer, default=0)
    object_id: Mapped[str | None] = _ref()
    object_type: Mapped[str | None] = mapped_column(String(64))
    api_version: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (Index(None, "object_id"), Index(None, "type"))


class WebhookEndpoint(_StripeObject, Base):
    __tablename__ = "stripe_webhook_endpoints"
    url: Mapped[str] = mapped_column(Text)
    status: Mapped[str | None] = mapped_column(String(32))
    enabled_events: Mapped[str] = mapped_column(Text)  # JSON list


class PaymentRow(Base):
    """One payment, as monitor.store.payment_table computes it; times are unix seconds like the objects'."""

    __tablename__ = "payments"
    payment_id: Mapped[str] = _id()
    source: Mapped[str] = mapped_column(String(32))
    checkout_session_id: Mapped[str | None] = _ref()
    payment_intent_id: Mapped[str | None] = _ref()
    invoice_id: Mapped[str | None] = _ref()
    stripe_subscription_id: Mapped[str | None] = _ref()
    stripe_subscription_status: Mapped[str | None] = mapped_column(String(32))
    customer_id: Mapped[str | None] = _ref()
    customer_email: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    created: Mapped[int | None] = mapped_column(BigInteger)
    amount_refunded: Mapped[int] = mapped_column(BigInteger)
    dispute_status: Mapped[str | None] = mapped_column(String(32))
    billing_reason: Mapped[str | None] = mapped_column(String(64))
    period_end: Mapped[int | None] = mapped_column(BigInteger)
    event_id: Mapped[str | None] = _ref()
    livemode: Mapped[bool | None] = mapped_column(Boolean)
    zero_reason: Mapped[str | None] = mapped_column(String(16))  # trial | discount, for a payment of 0
    __table_args__ = (
        Index(None, "payment_intent_id"),
        Index(None, "customer_id"),
        Index(None, "stripe_subscription_id"),
        Index(None, "created"),
    )


class UnmatchedPayment(Base):
    """A payment the latest reconcile counted as not matching (findings.PARITY_DEFINITION), so that Finance
    counts parity as the reconcile does (0008). monitor.store.payment_table.save_unmatched keeps it."""

    __tablename__ = "unmatched_payments"
    payment_id: Mapped[str] = _id()


class SyncWindow(Base):
    """One created-window of one resource: [window_start, window_end), paged newest first.

    `starting_after` is the last id saved, so a killed sync resumes right after it. Windows are
    independent, so several can be fetched at once.
    """

    __tablename__ = "sync_windows"
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    window_start: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    window_end: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    starting_after: Mapped[str | None] = _ref()
    # Events only: the `created` of the last event saved and how many events of that second came before
    # it in the listing, so the next page goes on counting Stripe's order within the second.
    tie_created: Mapped[int | None] = mapped_column(BigInteger)
    tie_rank: Mapped[int | None] = mapped_column(Integer)
    done: Mapped[bool] = mapped_column(Boolean, default=False)
    pages: Mapped[int] = mapped_column(Integer, default=0)
    objects: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SyncState(Base):
    """Per resource: every object created before `synced_until` (unix seconds) has been fetched."""

    __tablename__ = "sync_state"
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    synced_until: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class SyncResource(Base):
    """Per resource (the lists, `webhook_endpoints`, `undelivered_events`): how its last sync went.
    `ok_at` is when it last came in whole; `failed_at`/`error` describe its latest failure, cleared when
    it comes in again. A resource with no `ok_at` (and, for a list, no SyncState) has never synced."""

    __tablename__ = "sync_resources"
    resource: Mapped[str] = mapped_column(String(64), primary_key=True)
    ok_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    failed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    http_status: Mapped[int | None] = mapped_column(Integer)
    permission: Mapped[str | None] = mapped_column(String(128))  # what a restricted key lacks (403)


class StoreMeta(Base):
    """Facts about the store itself: the Stripe account and mode its snapshot was filled from."""

    __tablename__ = "store_meta"
    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)


class FindingRow(Base):
    """A finding with its lifecycle. `id` is derived from `key`, the finding's stable identity."""

    __tablename__ = "findings"
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    key: Mapped[str] = mapped_column(Text, unique=True)
    kind: Mapped[str] = mapped_column(String(64))
    severity: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))  # open | acknowledged | resolved
    payment_id: Mapped[str | None] = _ref()
    customer_email: Mapped[str | None] = mapped_column(Text)
    amount: Mapped[int | None] = mapped_column(BigInteger)
    currency: Mapped[str | None] = mapped_column(String(16))
    occurred_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    payload: Mapped[str] = mapped_column(Text)  # the Finding as JSON
    first_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen: Mapped[datetime] = mapped_column(UTCDateTime)
    resolved_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ack_note: Mapped[str | None] = mapped_column(Text)
    ack_by: Mapped[str | None] = mapped_column(String(255))
    ack_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    __table_args__ = (
        Index(None, "status", "kind"),
        Index(None, "payment_id"),
        Index(None, "customer_email"),
        Index(None, "last_seen"),
    )


class JobRun(Base):
    """Every sync, reconcile, probe, alert and repair run: start, end, outcome, error, counts."""

    __tablename__ = "job_runs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job: Mapped[str] = mapped_column(String(64))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    outcome: Mapped[str] = mapped_column(String(16))  # running | ok | failed
    error: Mapped[str | None] = mapped_column(Text)
    counts: Mapped[str | None] = mapped_column(Text)  # JSON
    __table_args__ = (Index(None, "job", "started_at"),)


STRIPE_TABLES = {
    "checkout.session": CheckoutSession,
    "invoice": Invoice,
    "invoice_payment": InvoicePayment,
    "payment_intent": PaymentIntent,
    "charge": Charge,
    "refund": Refund,
    "dispute": Dispute,
    "customer": Customer,
    "subscription": Subscription,
    "event": Event,
    "webhook_endpoint": WebhookEndpoint,
}


class ProbeResultRow(Base):
    """One probe of one component: its status, the exact error text, latency and time."""

    __tablename__ = "probe_results"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    component: Mapped[str] = mapped_column(String(128))
    status: Mapped[str] = mapped_column(String(16))  # up | degraded | down | unknown
    detail: Mapped[str] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (Index(None, "component", "checked_at"), Index(None, "checked_at"))


class RepairClaim(Base):
    """One claim per payment, arbitrated by the primary key: who is repairing it now (or last did). The key
    is the payment's canonical id (monitor.stripe_api.payment_state.canonical_id), whichever of its ids was given.

    A claim is taken by INSERT (first repair) or by a compare-and-set UPDATE on `token` (later repairs, a
    stale claim of a crashed process); whoever changes the row owns the repair until it sets `state`.
    """

    __tablename__ = "repair_claims"
    payment_id: Mapped[str] = mapped_column(String(255), primary_key=True)
    token: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # in_progress | done | failed
    operator: Mapped[str] = mapped_column(String(255))
    claimed_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class RepairRecord(Base):
    """The repair ledger: one row per attempt (done, refused, failed, planned), only ever added."""

    __tablename__ = "repairs"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    payment_id: Mapped[str] = mapped_column(String(255))  # the payment's canonical id
    requested_id: Mapped[str | None] = mapped_column(String(255))  # the id given: cs_, in_ or pi_ (0007)
    operator: Mapped[str] = mapped_column(String(255))
    role: Mapped[str | None] = mapped_column(String(32))
    strategy: Mapped[str] = mapped_column(String(16))
    dry_run: Mapped[bool] = mapped_column(Boolean, default=False)
    outcome: Mapped[str] = mapped_column(
        String(32)
    )  # activated | created | already_active | planned | refused | …
    reason: Mapped[str] = mapped_column(Text)
    stripe_state: Mapped[str | None] = mapped_column(Text)  # JSON: what Stripe said at the time
    rows_before: Mapped[str | None] = mapped_column(Text)  # JSON
    rows_after: Mapped[str | None] = mapped_column(Text)  # JSON
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (Index(None, "payment_id"), Index(None, "requested_id"), Index(None, "started_at"))


class AlertSent(Base):
    """What has been alerted, once per key (a finding's id, an outage's component and start, a recovery):
    the insert is the claim, so a key is alerted once however many processes evaluate it."""

    __tablename__ = "alerts_sent"
    key: Mapped[str] = mapped_column(String(255), primary_key=True)
    kind: Mapped[str] = mapped_column(String(32))  # finding | outage | recovery
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AlertDelivery(Base):
    """Every alert delivery to every target, with its error when it failed."""

    __tablename__ = "alert_deliveries"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    keys: Mapped[str] = mapped_column(Text)  # JSON list of the alerted keys (several for a digest)
    target: Mapped[str] = mapped_column(Text)  # the alert URL, secrets masked
    title: Mapped[str] = mapped_column(Text)
    message: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))  # sent | failed | capped
    error: Mapped[str | None] = mapped_column(Text)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    sent_at: Mapped[datetime] = mapped_column(UTCDateTime)
    __table_args__ = (Index(None, "sent_at"),)


class Lease(Base):
    """Leadership among several `python -m jobs` processes: held while `expires_at` is in the future and
    renewed by its holder; taken over by compare-and-set once it has expired."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(255))
    acquired_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
