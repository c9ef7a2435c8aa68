"""Usage: who made the model (publisher, origin country, licence), the request's cost, and a
daily roll-up by key and model.

Revision ID: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage") as table:
        table.add_column(sa.Column("publisher", sa.String(128), nullable=True))
        table.add_column(sa.Column("origin", sa.String(64), nullable=True))
        table.add_column(sa.Column("licence", sa.String(128), nullable=True))
        table.add_column(sa.Column("cost_usd", sa.Float, nullable=False, server_default="0"))
    op.create_table(
        "usage_daily",
        sa.Column("day", sa.String(10), primary_key=True),  # YYYY-MM-DD, UTC
        sa.Column("key_id", sa.String(16), primary_key=True),  # "" without a key
        sa.Column("model", sa.String(256), primary_key=True),  # "" when none was named
        sa.Column("publisher", sa.String(128), nullable=True),
        sa.Column("origin", sa.String(64), nullable=True),
        sa.Column("requests", sa.BigInteger, nullable=False),
        sa.Column("prompt_tokens", sa.BigInteger, nullable=False),
        sa.Column("cached_tokens", sa.BigInteger, nullable=False),
        sa.Column("completion_tokens", sa.BigInteger, nullable=False),
        sa.Column("cost_usd", sa.Float, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("usage_daily")
    with op.batch_alter_table("usage") as table:
        for column in ("cost_usd", "licence", "origin", "publisher"):
            table.drop_column(column)
