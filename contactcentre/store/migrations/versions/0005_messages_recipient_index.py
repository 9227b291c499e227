"""messages: index (recipient, at_ms), for the e-mail channel's memory of which envelope senders had an
acknowledgement lately (RFC 3834, once per ``ack_once_per_s``), whoever's customer record they wrote from

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_messages_recipient_at_ms"), ["recipient", "at_ms"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("messages", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_messages_recipient_at_ms"))
