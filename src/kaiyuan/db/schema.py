"""The tables, as the latest migration leaves them (migrations/versions/ writes them)."""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", String(16), primary_key=True),  # public: the secret starts with it
    Column("name", String(128), nullable=False, unique=True),
    Column("secret_sha256", String(64), nullable=False),
    Column("models", JSON, nullable=True),  # None: every model
    Column("rpm", BigInteger, nullable=True),
    Column("tpm", BigInteger, nullable=True),
    Column("parallel", BigInteger, nullable=True),
    Column("budget_tokens", BigInteger, nullable=True),
    Column("budget_usd", Float, nullable=True),
    Column("period", String(8), nullable=False, default="month"),
    Column("expires_at", DateTime(timezone=True), nullable=True),
    Column("admin", Boolean, nullable=False, default=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
    Column("model_limits", JSON, nullable=True),  # {model: {"rpm"|"tpm"|"parallel": N}}
)

usage = Table(
    "usage",
    metadata,
    Column(
        "id", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    ),
    Column("at", DateTime(timezone=True), nullable=False),
    Column("key_id", String(16), nullable=True),
    Column("key_name", String(128), nullable=True),
    Column("model", String(256), nullable=True),
    Column("endpoint", String(128), nullable=False),
    Column("app", String(256), nullable=True),  # X-Title, else HTTP-Referer's host, else UA
    Column("status", Integer, nullable=False),
    Column("prompt_tokens", Integer, nullable=False),
    Column("cached_tokens", Integer, nullable=False),
    Column("completion_tokens", Integer, nullable=False),
    Column("ttft_ms", Float, nullable=True),
    Column("duration_ms", Float, nullable=False),
    Column("finish_reason", String(16), nullable=True),
    Column("cancelled", Boolean, nullable=False),
    Column("publisher", String(128), nullable=True),
    Column("origin", String(64), nullable=True),  # the publisher's country
    Column("licence", String(128), nullable=True),
    Column("cost_usd", Float, nullable=False, server_default="0"),
    Index("usage_at", "at"),
    Index("usage_key_at", "key_id", "at"),
)

# One row per UTC day, key and model, updated in the same transaction as each usage row.
usage_daily = Table(
    "usage_daily",
    metadata,
    Column("day", String(10), primary_key=True),
    Column("key_id", String(16), primary_key=True),  # "" without a key
    Column("model", String(256), primary_key=True),  # "" when none was named
    Column("publisher", String(128), nullable=True),
    Column("origin", String(64), nullable=True),
    Column("requests", BigInteger, nullable=False),
    Column("prompt_tokens", BigInteger, nullable=False),
    Column("cached_tokens", BigInteger, nullable=False),
    Column("completion_tokens", BigInteger, nullable=False),
    Column("cost_usd", Float, nullable=False),
)

# Chats the web app keeps on the server: one row per conversation, its messages a JSON list.
conversations = Table(
    "conversations",
    metadata,
    Column("id", String(40), primary_key=True),  # conv_<24 hex>
    Column("owner", String(16), nullable=True),  # the key's id; None on a server without keys
    Column("title", String(200), nullable=False),
    Column("model", String(256), nullable=True),
    Column("system", Text, nullable=True),
    Column("settings", JSON, nullable=False),
    Column("messages", JSON, nullable=False),
    # The title and every message's content, case-folded: what ?q= searches with LIKE.
    Column("search", Text, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False),
    Index("conversations_owner_updated", "owner", "updated_at"),
)
