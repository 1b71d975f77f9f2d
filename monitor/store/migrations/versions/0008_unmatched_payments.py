"""the payments the latest reconcile counted as not matching

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-16 12:00:00.000000

Parity has one definition (monitor.rules.findings.PARITY_DEFINITION) that reconcile computes from the app's
rows, which the store does not hold; `unmatched_payments` keeps the payments it counted as not matching, so
Finance's parity over any range is the reconcile's. Empty until the next reconcile.
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "unmatched_payments",
        sa.Column("payment_id", sa.String(length=255), nullable=False),
        sa.PrimaryKeyConstraint("payment_id", name=op.f("pk_unmatched_payments")),
    )


def downgrade() -> None:
    op.drop_table("unmatched_payments")
