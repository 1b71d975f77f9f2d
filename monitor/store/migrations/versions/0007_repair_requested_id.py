"""the repair ledger records the id given beside the payment

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-09 12:00:00.000000

A repair claims, locks and records a payment by its canonical id (monitor.stripe_api.payment_state.canonical_id),
whichever of its ids was given; `repairs.requested_id` keeps the id as given. Rows written
before were recorded by the id given, so that is their `requested_id` too.
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("repairs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("requested_id", sa.String(length=255), nullable=True))
        batch_op.create_index(batch_op.f("ix_repairs_requested_id"), ["requested_id"], unique=False)
    op.execute("UPDATE repairs SET requested_id = payment_id")


def downgrade() -> None:
    with op.batch_alter_table("repairs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_repairs_requested_id"))
        batch_op.drop_column("requested_id")
