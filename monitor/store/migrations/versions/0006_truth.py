"""a snapshot true to a real account

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02 13:00:00.000000

- `snapshot_seq` on every Stripe table: events of one second are ordered as Stripe lists them
  (monitor.store.rows.EVENT_SEQ_TOP), so the newest state wins whatever order pages are saved in;
- `stripe_invoice_payments`: every PaymentIntent of an invoice (`invoice.payments`), kept apart from the
  invoice so an event's copy (which never carries `payments`) takes nothing away;
- `amount_subtotal` on sessions, `subtotal`/`total` on invoices: a payment of 0 is a trial or 100 % off;
- sync windows remember where they are in a second of events; `sync_resources` records how each
  resource last synced and why it failed; `store_meta` the Stripe account and mode of the snapshot;
- `payment_sources` as DESIGN.md "What counts as a payment" now says (trials and 100 %-off starts, async
  payments from when they were paid, every PaymentIntent of an invoice), and the `payments` table gets
  each payment's `zero_reason`, recomputed here for the whole store.
"""

import orjson
import sqlalchemy as sa
from alembic import op

from monitor.store import payment_table

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

STRIPE_TABLES = (
    "stripe_checkout_sessions",
    "stripe_invoices",
    "stripe_payment_intents",
    "stripe_charges",
    "stripe_refunds",
    "stripe_disputes",
    "stripe_customers",
    "stripe_subscriptions",
    "stripe_events",
    "stripe_webhook_endpoints",
)
ASYNC_PAID = "checkout.session.async_payment_succeeded"

# DESIGN.md "What counts as a payment":
# - a complete Checkout Session that is paid, or in subscription mode needs no payment (a trial or a
#   100 %-off start, a payment of 0); a session paid later by an async method counts from the
#   `checkout.session.async_payment_succeeded` event (its `created` otherwise);
# - a paid invoice ($0 included) that no session names (else it is that session's payment);
# - a succeeded PaymentIntent that belongs to neither: not a session's, not any invoice's (old API
#   versions: the invoice's `payment_intent`, the intent's `invoice`; newer: `invoice.payments`).
# `zero_reason` says why a payment is 0: 'discount' when there was something to pay before discounts,
# else 'trial'.
SOURCES_VIEW = f"""
CREATE VIEW payment_sources AS
SELECT s.id AS payment_id, 'checkout_session' AS source, s.id AS checkout_session_id,
       COALESCE(s.payment_intent_id, i.payment_intent_id,
                (SELECT MIN(ip.payment_intent_id) FROM stripe_invoice_payments ip
                 WHERE ip.invoice_id = s.invoice_id AND ip.status = 'paid')) AS payment_intent_id,
       s.invoice_id AS invoice_id,
       COALESCE(s.subscription_id, i.subscription_id) AS stripe_subscription_id, s.customer_id AS customer_id,
       COALESCE(s.customer_email, c.email) AS customer_email, s.amount_total AS amount, s.currency AS currency,
       COALESCE((SELECT MIN(e.created) FROM stripe_events e
                 WHERE e.object_id = s.id AND e.type = '{ASYNC_PAID}'), s.created) AS created,
       i.billing_reason AS billing_reason, i.line_period_end AS period_end, s.livemode AS livemode,
       CASE WHEN COALESCE(s.amount_total, 0) = 0 THEN
         CASE WHEN COALESCE(s.amount_subtotal, 0) > 0 THEN 'discount' ELSE 'trial' END END AS zero_reason
FROM stripe_checkout_sessions s
LEFT JOIN stripe_invoices i ON i.id = s.invoice_id
LEFT JOIN stripe_customers c ON c.id = s.customer_id
WHERE s.status = 'complete'
  AND (s.payment_status = 'paid' OR (s.payment_status = 'no_payment_required' AND s.mode = 'subscription'))
UNION ALL
SELECT i.id, 'invoice', NULL,
       COALESCE(i.payment_intent_id,
                (SELECT MIN(ip.payment_intent_id) FROM stripe_invoice_payments ip
                 WHERE ip.invoice_id = i.id AND ip.status = 'paid')),
       i.id, i.subscription_id, i.customer_id,
       COALESCE(i.customer_email, c.email), i.amount_paid, i.currency, COALESCE(i.paid_at, i.created),
       i.billing_reason, i.line_period_end, i.livemode,
       CASE WHEN COALESCE(i.amount_paid, 0) = 0 THEN
         CASE WHEN COALESCE(i.subtotal, 0) > 0 THEN 'discount' ELSE 'trial' END END
FROM stripe_invoices i
LEFT JOIN stripe_customers c ON c.id = i.customer_id
WHERE i.status = 'paid'
  AND NOT EXISTS (SELECT 1 FROM stripe_checkout_sessions s WHERE s.invoice_id = i.id)
UNION ALL
SELECT p.id, 'payment_intent', NULL, p.id, NULL, NULL, p.customer_id, COALESCE(p.receipt_email, c.email),
       p.amount_received, p.currency, p.created, NULL, NULL, p.livemode, NULL
FROM stripe_payment_intents p
LEFT JOIN stripe_customers c ON c.id = p.customer_id
WHERE p.status = 'succeeded' AND p.invoice_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM stripe_checkout_sessions s WHERE s.payment_intent_id = p.id)
  AND NOT EXISTS (SELECT 1 FROM stripe_invoices i WHERE i.payment_intent_id = p.id)
  AND NOT EXISTS (SELECT 1 FROM stripe_invoice_payments ip WHERE ip.payment_intent_id = p.id)
"""


def upgrade() -> None:
    op.execute("DROP VIEW payment_sources")
    for table in STRIPE_TABLES:
        op.add_column(table, sa.Column("snapshot_seq", sa.BigInteger(), nullable=False, server_default="0"))
    op.add_column("stripe_checkout_sessions", sa.Column("amount_subtotal", sa.BigInteger(), nullable=True))
    op.add_column("stripe_invoices", sa.Column("subtotal", sa.BigInteger(), nullable=True))
    op.add_column("stripe_invoices", sa.Column("total", sa.BigInteger(), nullable=True))
    op.create_table(
        "stripe_invoice_payments",
        sa.Column("invoice_id", sa.String(length=255), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("amount_paid", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("snapshot_seq", sa.BigInteger(), nullable=False, server_default="0"),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_invoice_payments")),
    )
    for column in ("created", "invoice_id", "payment_intent_id"):
        op.create_index(
            op.f(f"ix_stripe_invoice_payments_{column}"), "stripe_invoice_payments", [column], unique=False
        )
    op.add_column("sync_windows", sa.Column("tie_created", sa.BigInteger(), nullable=True))
    op.add_column("sync_windows", sa.Column("tie_rank", sa.Integer(), nullable=True))
    op.create_table(
        "sync_resources",
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("ok_at", sa.DateTime(), nullable=True),
        sa.Column("failed_at", sa.DateTime(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("permission", sa.String(length=128), nullable=True),
        sa.PrimaryKeyConstraint("resource", name=op.f("pk_sync_resources")),
    )
    op.create_table(
        "store_meta",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_store_meta")),
    )
    op.add_column("payments", sa.Column("zero_reason", sa.String(length=16), nullable=True))
    conn = op.get_bind()
    _fill_from_raw(conn)
    op.execute(SOURCES_VIEW)
    payment_table.rebuild(conn)


def _fill_from_raw(conn) -> None:
    """The new columns and the invoice payments of objects stored before this revision, from their JSON."""
    from monitor.store.rows import invoice_payments, row_for

    sessions = conn.execute(sa.text("SELECT id, raw FROM stripe_checkout_sessions")).all()
    for object_id, raw in sessions:
        subtotal = orjson.loads(raw).get("amount_subtotal")
        if isinstance(subtotal, int):
            conn.execute(
                sa.text("UPDATE stripe_checkout_sessions SET amount_subtotal = :v WHERE id = :id"),
                {"v": subtotal, "id": object_id},
            )
    payments = []
    for object_id, snapshot_at, raw in conn.execute(
        sa.text("SELECT id, snapshot_at, raw FROM stripe_invoices")
    ):
        obj = orjson.loads(raw)
        conn.execute(
            sa.text("UPDATE stripe_invoices SET subtotal = :s, total = :t WHERE id = :id"),
            {"s": obj.get("subtotal"), "t": obj.get("total"), "id": object_id},
        )
        payments += [row_for(p, snapshot_at) for p in invoice_payments(obj)]
    if payments:
        columns = list(payments[0])
        conn.execute(
            sa.text(
                f"INSERT INTO stripe_invoice_payments ({', '.join(columns)}) "
                f"VALUES ({', '.join(':' + c for c in columns)})"
            ),
            payments,
        )


def downgrade() -> None:
    op.execute("DROP VIEW payment_sources")
    op.drop_column("payments", "zero_reason")
    op.drop_table("store_meta")
    op.drop_table("sync_resources")
    op.drop_column("sync_windows", "tie_rank")
    op.drop_column("sync_windows", "tie_created")
    for column in ("payment_intent_id", "invoice_id", "created"):
        op.drop_index(op.f(f"ix_stripe_invoice_payments_{column}"), table_name="stripe_invoice_payments")
    op.drop_table("stripe_invoice_payments")
    op.drop_column("stripe_invoices", "total")
    op.drop_column("stripe_invoices", "subtotal")
    op.drop_column("stripe_checkout_sessions", "amount_subtotal")
    for table in STRIPE_TABLES:
        op.drop_column(table, "snapshot_seq")
    from importlib.util import module_from_spec, spec_from_file_location
    from pathlib import Path

    spec = spec_from_file_location("_revision_0005", Path(__file__).with_name("0005_payments_table.py"))
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    op.execute(module.SOURCES_VIEW)
