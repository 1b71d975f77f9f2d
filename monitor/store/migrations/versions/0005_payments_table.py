"""the payments table

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-27 15:20:00.000000

The `payments` view becomes `payment_sources` (the same definition), and `payments` becomes a table: that
view materialised with each payment's refunded amount, latest dispute, Stripe subscription status and
announcing event, kept up to date by store.save_objects (monitor/store/payment_table.py). Reading every payment
is then one pass over a narrow table instead of the view's joins over the objects' raw JSON. Revision 0006
fills it.
"""

import importlib.util
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _revision_0001():
    spec = importlib.util.spec_from_file_location(
        "_revision_0001", Path(__file__).with_name("0001_store_schema.py")
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


PAYMENTS_VIEW = _revision_0001().PAYMENTS_VIEW  # the definition of 0001, renamed below
SOURCES_VIEW = PAYMENTS_VIEW.replace("CREATE VIEW payments AS", "CREATE VIEW payment_sources AS")
INDEXED = ("payment_intent_id", "customer_id", "stripe_subscription_id", "created")


def upgrade() -> None:
    op.execute("DROP VIEW payments")
    op.execute(SOURCES_VIEW)
    op.create_table(
        "payments",
        sa.Column("payment_id", sa.String(length=255), nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("checkout_session_id", sa.String(length=255), nullable=True),
        sa.Column("payment_intent_id", sa.String(length=255), nullable=True),
        sa.Column("invoice_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_subscription_id", sa.String(length=255), nullable=True),
        sa.Column("stripe_subscription_status", sa.String(length=32), nullable=True),
        sa.Column("customer_id", sa.String(length=255), nullable=True),
        sa.Column("customer_email", sa.Text(), nullable=True),
        sa.Column("amount", sa.BigInteger(), nullable=True),
        sa.Column("currency", sa.String(length=16), nullable=True),
        sa.Column("created", sa.BigInteger(), nullable=True),
        sa.Column("amount_refunded", sa.BigInteger(), nullable=False),
        sa.Column("dispute_status", sa.String(length=32), nullable=True),
        sa.Column("billing_reason", sa.String(length=64), nullable=True),
        sa.Column("period_end", sa.BigInteger(), nullable=True),
        sa.Column("event_id", sa.String(length=255), nullable=True),
        sa.Column("livemode", sa.Boolean(), nullable=True),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_payments")),
    )
    for column in INDEXED:
        op.create_index(op.f(f"ix_payments_{column}"), "payments", [column], unique=False)
    # The table is filled by the last revision that changes what a payment is (0006): monitor.store.payment_table
    # computes rows for the newest definition, which this revision's tables cannot answer yet.


def downgrade() -> None:
    for column in reversed(INDEXED):
        op.drop_index(op.f(f"ix_payments_{column}"), table_name="payments")
    op.drop_table("payments")
    op.execute("DROP VIEW payment_sources")
    op.execute(PAYMENTS_VIEW)
