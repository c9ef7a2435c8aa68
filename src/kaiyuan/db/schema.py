"""The tables, as the latest migration leaves them (migrations/versions/ writes them)."""

from __future__ import annotations

from sqlalchemy import JSON, BigInteger, Boolean, Column, DateTime, Float, MetaData, String, Table

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
)
