"""router_fence (the active router's fencing token) and router_inputs (the routers' applied inputs), for
one centre run by several processes

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-08
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "router_fence",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("token", sa.BigInteger(), nullable=False),
        sa.Column("holder", sa.String(length=128), nullable=False),
        sa.Column("since_ms", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_router_fence_one_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_router_fence")),
    )
    op.create_table(
        "router_inputs",
        sa.Column("input_id", sa.String(length=200), nullable=False),
        sa.Column("last_event_id", sa.BigInteger(), nullable=False),
        sa.Column("at_ms", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("input_id", name=op.f("pk_router_inputs")),
    )


def downgrade() -> None:
    op.drop_table("router_inputs")
    op.drop_table("router_fence")
