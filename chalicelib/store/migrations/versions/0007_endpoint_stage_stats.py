"""endpoint stage API statistics

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "endpoint_stage_stats",
        sa.Column("stage_id", sa.String(length=36), nullable=False),
        sa.Column("minute", sa.DateTime(), nullable=False),
        sa.Column("appkey", sa.String(length=64), nullable=False),
        sa.Column("endpoint_id", sa.String(length=36), nullable=False),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("status_2xx", sa.Integer(), nullable=False),
        sa.Column("status_4xx", sa.Integer(), nullable=False),
        sa.Column("status_5xx", sa.Integer(), nullable=False),
        sa.Column("latency_buckets", sa.JSON(), nullable=False),
        sa.ForeignKeyConstraint(["appkey"], ["projects.appkey"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["stage_id"], ["endpoint_stages.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("stage_id", "minute"),
    )
    with op.batch_alter_table("endpoint_stage_stats", schema=None) as batch_op:
        batch_op.create_index(
            "ix_endpoint_stage_stats_appkey_minute", ["appkey", "minute"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("endpoint_stage_stats", schema=None) as batch_op:
        batch_op.drop_index("ix_endpoint_stage_stats_appkey_minute")
    op.drop_table("endpoint_stage_stats")
