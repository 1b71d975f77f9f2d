"""store schema

Revision ID: 0001
Revises:
Create Date: 2026-11-27 12:22:48.544030
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


# A payment, as DESIGN.md "What counts as a payment" says: a complete and paid Checkout Session; a paid
# invoice that no session names (else it is that session's payment); a succeeded PaymentIntent that
# belongs to neither.
PAYMENTS_VIEW = """
CREATE VIEW payments AS
SELECT s.id AS payment_id, 'checkout_session' AS source, s.id AS checkout_session_id,
       COALESCE(s.payment_intent_id, i.payment_intent_id) AS payment_intent_id, s.invoice_id AS invoice_id,
       COALESCE(s.subscription_id, i.subscription_id) AS stripe_subscription_id, s.customer_id AS customer_id,
       COALESCE(s.customer_email, c.email) AS customer_email, s.amount_total AS amount, s.currency AS currency,
       s.created AS created, i.billing_reason AS billing_reason, i.line_period_end AS period_end,
       s.livemode AS livemode
FROM stripe_checkout_sessions s
LEFT JOIN stripe_invoices i ON i.id = s.invoice_id
LEFT JOIN stripe_customers c ON c.id = s.customer_id
WHERE s.status = 'complete' AND s.payment_status = 'paid'
UNION ALL
SELECT i.id, 'invoice', NULL, i.payment_intent_id, i.id, i.subscription_id, i.customer_id,
       COALESCE(i.customer_email, c.email), i.amount_paid, i.currency, COALESCE(i.paid_at, i.created),
       i.billing_reason, i.line_period_end, i.livemode
FROM stripe_invoices i
LEFT JOIN stripe_customers c ON c.id = i.customer_id
WHERE i.status = 'paid'
  AND NOT EXISTS (SELECT 1 FROM stripe_checkout_sessions s WHERE s.invoice_id = i.id)
UNION ALL
SELECT p.id, 'payment_intent', NULL, p.id, NULL, NULL, p.customer_id, COALESCE(p.receipt_email, c.email),
       p.amount_received, p.currency, p.created, NULL, NULL, p.livemode
FROM stripe_payment_intents p
LEFT JOIN stripe_customers c ON c.id = p.customer_id
WHERE p.status = 'succeeded' AND p.invoice_id IS NULL
  AND NOT EXISTS (SELECT 1 FROM stripe_checkout_sessions s WHERE s.payment_intent_id = p.id)
  AND NOT EXISTS (SELECT 1 FROM stripe_invoices i WHERE i.payment_intent_id = p.id)
"""


def upgrade() -> None:

    op.create_table(
        "findings",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("kind", sa.String(length=64), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("payment_id", sa.String(length=255), nullable=True),
        sa.Column("customer_email", sa.Text(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("occurred_at", sa.DateTime(), nullable=True),
        sa.Column("payload", sa.Text(), nullable=False),
        sa.Column("first_seen", sa.DateTime(), nullable=False),
        sa.Column("last_seen", sa.DateTime(), nullable=False),
        sa.Column("resolved_at", sa.DateTime(), nullable=True),
        sa.Column("ack_note", sa.Text(), nullable=True),
        sa.Column("ack_by", sa.String(length=255), nullable=True),
        sa.Column("ack_at", sa.DateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_findings")),
        sa.UniqueConstraint("key", name=op.f("uq_findings_key")),
    )
    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_findings_customer_email"), ["customer_email"], unique=False)
        batch_op.create_index(batch_op.f("ix_findings_last_seen"), ["last_seen"], unique=False)
        batch_op.create_index(batch_op.f("ix_findings_payment_id"), ["payment_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_findings_status_kind"), ["status", "kind"], unique=False)

    op.create_table(
        "job_runs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("job", sa.String(length=64), nullable=False),
        sa.Column("started_at", sa.DateTime(), nullable=False),
        sa.Column("finished_at", sa.DateTime(), nullable=True),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("counts", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_job_runs")),
    )
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_job_runs_job_started_at"), ["job", "started_at"], unique=False)

    op.create_table(
        "stripe_charges",
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=True),
        sa.Column("refunded", sa.Boolean(), nullable=True),
        sa.Column("disputed", sa.Boolean(), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_charges")),
    )
    with op.batch_alter_table("stripe_charges", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_charges_created"), ["created"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stripe_charges_payment_intent_id"), ["payment_intent_id"], unique=False
        )

    op.create_table(
        "stripe_checkout_sessions",
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("payment_status", sa.String(length=32), nullable=True),
        sa.Column("mode", sa.String(length=32), nullable=True),
        sa.Column("amount_total", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("customer_email", sa.Text(), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("invoice_id", sa.String(length=255), nullable=True),
        sa.Column("subscription_id", sa.String(length=255), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_checkout_sessions")),
    )
    with op.batch_alter_table("stripe_checkout_sessions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_checkout_sessions_created"), ["created"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stripe_checkout_sessions_customer_id"), ["customer_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_stripe_checkout_sessions_invoice_id"), ["invoice_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_stripe_checkout_sessions_payment_intent_id"), ["payment_intent_id"], unique=False
        )

    op.create_table(
        "stripe_customers",
        sa.Column("email", sa.Text(), nullable=True),
        sa.Column("name", sa.Text(), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_customers")),
    )
    with op.batch_alter_table("stripe_customers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_customers_created"), ["created"], unique=False)
        batch_op.create_index(batch_op.f("ix_stripe_customers_email"), ["email"], unique=False)

    op.create_table(
        "stripe_disputes",
        sa.Column("charge_id", sa.String(length=255), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_disputes")),
    )
    with op.batch_alter_table("stripe_disputes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_disputes_created"), ["created"], unique=False)

    op.create_table(
        "stripe_events",
        sa.Column("type", sa.String(length=128), nullable=False),
        sa.Column("pending_webhooks", sa.Integer(), nullable=False),
        sa.Column("object_id", sa.String(length=255), nullable=True),
        sa.Column("object_type", sa.String(length=64), nullable=True),
        sa.Column("api_version", sa.String(length=64), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_events")),
    )
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_events_created"), ["created"], unique=False)
        batch_op.create_index(batch_op.f("ix_stripe_events_object_id"), ["object_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_stripe_events_type"), ["type"], unique=False)

    op.create_table(
        "stripe_invoices",
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("customer_email", sa.Text(), nullable=True),
        sa.Column("subscription_id", sa.String(length=255), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("amount_paid", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("billing_reason", sa.String(length=64), nullable=True),
        sa.Column("line_period_end", sa.BigInteger(), nullable=True),
        sa.Column("paid_at", sa.BigInteger(), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_invoices")),
    )
    with op.batch_alter_table("stripe_invoices", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_invoices_created"), ["created"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_stripe_invoices_payment_intent_id"), ["payment_intent_id"], unique=False
        )
        batch_op.create_index(
            batch_op.f("ix_stripe_invoices_subscription_id"), ["subscription_id"], unique=False
        )

    op.create_table(
        "stripe_payment_intents",
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("amount_received", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("receipt_email", sa.Text(), nullable=True),
        sa.Column("invoice_id", sa.String(length=255), nullable=True),
        sa.Column("latest_charge", sa.String(length=255), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_payment_intents")),
    )
    with op.batch_alter_table("stripe_payment_intents", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_payment_intents_created"), ["created"], unique=False)

    op.create_table(
        "stripe_refunds",
        sa.Column("charge_id", sa.String(length=255), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_refunds")),
    )
    with op.batch_alter_table("stripe_refunds", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_refunds_created"), ["created"], unique=False)

    op.create_table(
        "stripe_subscriptions",
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("current_period_end", sa.BigInteger(), nullable=True),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_subscriptions")),
    )
    with op.batch_alter_table("stripe_subscriptions", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_subscriptions_created"), ["created"], unique=False)

    op.create_table(
        "stripe_webhook_endpoints",
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=True),
        sa.Column("enabled_events", sa.Text(), nullable=False),
        sa.Column("id", sa.String(length=255), nullable=False),
        sa.Column("created", sa.BigInteger(), nullable=False),
        sa.Column("livemode", sa.Boolean(), nullable=False),
        sa.Column("snapshot_at", sa.BigInteger(), nullable=False),
        sa.Column("raw", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stripe_webhook_endpoints")),
    )
    with op.batch_alter_table("stripe_webhook_endpoints", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_stripe_webhook_endpoints_created"), ["created"], unique=False)

    op.create_table(
        "sync_state",
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("synced_until", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("resource", name=op.f("pk_sync_state")),
    )
    op.create_table(
        "sync_windows",
        sa.Column("resource", sa.String(length=64), nullable=False),
        sa.Column("window_start", sa.BigInteger(), nullable=False),
        sa.Column("window_end", sa.BigInteger(), nullable=False),
        sa.Column("starting_after", sa.String(length=255), nullable=True),
        sa.Column("done", sa.Boolean(), nullable=False),
        sa.Column("pages", sa.Integer(), nullable=False),
        sa.Column("objects", sa.Integer(), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("resource", "window_start", "window_end", name=op.f("pk_sync_windows")),
    )
    op.execute(PAYMENTS_VIEW)


def downgrade() -> None:
    op.execute("DROP VIEW payments")

    op.drop_table("sync_windows")
    op.drop_table("sync_state")
    with op.batch_alter_table("stripe_webhook_endpoints", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_webhook_endpoints_created"))

    op.drop_table("stripe_webhook_endpoints")
    with op.batch_alter_table("stripe_subscriptions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_subscriptions_created"))

    op.drop_table("stripe_subscriptions")
    with op.batch_alter_table("stripe_refunds", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_refunds_created"))

    op.drop_table("stripe_refunds")
    with op.batch_alter_table("stripe_payment_intents", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_payment_intents_created"))

    op.drop_table("stripe_payment_intents")
    with op.batch_alter_table("stripe_invoices", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_invoices_subscription_id"))
        batch_op.drop_index(batch_op.f("ix_stripe_invoices_payment_intent_id"))
        batch_op.drop_index(batch_op.f("ix_stripe_invoices_created"))

    op.drop_table("stripe_invoices")
    with op.batch_alter_table("stripe_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_events_type"))
        batch_op.drop_index(batch_op.f("ix_stripe_events_object_id"))
        batch_op.drop_index(batch_op.f("ix_stripe_events_created"))

    op.drop_table("stripe_events")
    with op.batch_alter_table("stripe_disputes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_disputes_created"))

    op.drop_table("stripe_disputes")
    with op.batch_alter_table("stripe_customers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_customers_email"))
        batch_op.drop_index(batch_op.f("ix_stripe_customers_created"))

    op.drop_table("stripe_customers")
    with op.batch_alter_table("stripe_checkout_sessions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_checkout_sessions_payment_intent_id"))
        batch_op.drop_index(batch_op.f("ix_stripe_checkout_sessions_invoice_id"))
        batch_op.drop_index(batch_op.f("ix_stripe_checkout_sessions_customer_id"))
        batch_op.drop_index(batch_op.f("ix_stripe_checkout_sessions_created"))

    op.drop_table("stripe_checkout_sessions")
    with op.batch_alter_table("stripe_charges", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_stripe_charges_payment_intent_id"))
        batch_op.drop_index(batch_op.f("ix_stripe_charges_created"))

    op.drop_table("stripe_charges")
    with op.batch_alter_table("job_runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_job_runs_job_started_at"))

    op.drop_table("job_runs")
    with op.batch_alter_table("findings", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_findings_status_kind"))
        batch_op.drop_index(batch_op.f("ix_findings_payment_id"))
        batch_op.drop_index(batch_op.f("ix_findings_last_seen"))
        batch_op.drop_index(batch_op.f("ix_findings_customer_email"))

    op.drop_table("findings")
