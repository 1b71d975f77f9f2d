"""probe results

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-27 12:40:27.045521
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:

    op.create_table(
        "probe_results",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("component", sa.String(length=128), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("checked_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_probe_results")),
    )
    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_probe_results_checked_at"), ["checked_at"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_probe_results_component_checked_at"), ["component", "checked_at"], unique=False
        )


def downgrade() -> None:

    with op.batch_alter_table("probe_results", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_probe_results_component_checked_at"))
        batch_op.drop_index(batch_op.f("ix_probe_results_checked_at"))

    op.drop_table("probe_results")
