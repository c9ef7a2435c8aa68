"""The one typed definition of kaiyuan's settings.

Precedence, highest first: CLI flags (passed as init values), ``KAIYUAN_*`` environment
variables, the TOML config file (``$KAIYUAN_CONFIG`` or ``$KAIYUAN_HOME/config.toml``), defaults.
This is the only module that reads the environment.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

DEFAULT_MODEL = "smollm2-135m-instruct"
# The tool-call parsers' names (chat/toolcalls registers one class per name; a test checks the
# two agree): config is the bottom layer, so it names them rather than importing the registry.
TOOL_PARSERS = ("hermes", "qwen3_coder", "deepseek_v3", "deepseek_v31", "llama3")


def default_home() -> Path:
    return Path(os.environ.get("KAIYUAN_HOME") or Path.home() / ".kaiyuan").expanduser()


def config_file() -> Path:
    explicit = os.environ.get("KAIYUAN_CONFIG")
    return Path(explicit).expanduser() if explicit else default_home() / "config.toml"


class McpServer(BaseModel):
    """One MCP server: a command run over stdio, or a streamable-HTTP URL."""

    model_config = ConfigDict(extra="forbid")
    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    url: str | None = None
    headers: dict[str, str] = Field(default_factory=dict)
    timeout: float = Field(30.0, gt=0, description="Seconds to connect and for each call.")

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("an MCP server needs exactly one of command (stdio) or url (HTTP)")
        return self


class GenerationDefaults(BaseModel):
    """A model's default sampling and answer length; a request's own values always win."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")
    top_p: float | None = Field(None, gt=0, le=1, description="Nucleus sampling mass.")
    top_k: int | None = Field(None, ge=0, description="Most likely tokens kept (0: all).")
    min_p: float | None = Field(None, ge=0, le=1, description="Least probability, relative.")
    repetition_penalty: float | None = Field(
        None, gt=0, le=2, description="Penalty on tokens of the last 64 (1: off)."
    )
    max_tokens: int | None = Field(None, ge=1, description="Default answer length in tokens.")


class Settings(BaseSettings):
    """Server, engine and client settings; every field is also a ``KAIYUAN_<NAME>`` variable."""

    # validate_by_name: the hub fields below also answer to their SDKs' variables (aliases),
    # and must still be settable by name (flags, config.toml).
    model_config = SettingsConfigDict(
        env_prefix="KAIYUAN_", extra="forbid", frozen=True, validate_by_name=True
    )

    home: Path = Field(default_factory=default_home, description="Where user data lives.")
    host: str = Field("127.0.0.1", description="Address the server binds to.")
    port: int = Field(8000, ge=0, le=65535, description="Port the server listens on.")
    models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: [DEFAULT_MODEL],
        min_length=1,
        description="Model ids to serve (repeat the flag for several).",
    )
    context_length: int | None = Field(
        None, ge=64, description="Context window in tokens (default: the model's, at most 8192)."
    )
    threads: int | None = Field(
        None,
        ge=1,
        description="CPU threads for generation (default: the cores other programs leave free, "
        "followed as that changes).",
    )
    parallel: int = Field(
        4, ge=1, le=64, description="Requests one model generates at once (batched slots)."
    )
    max_queue: int = Field(
        16, ge=0, description="Requests allowed to wait for a model; past that: 503."
    )
    max_body_bytes: int = Field(
        16 * 1024 * 1024, ge=1024, description="Largest request body accepted (413 past it)."
    )
    allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Host names the server answers besides localhost and IP addresses ('*' "
        "for any): a guard against DNS rebinding.",
    )
    cors_origins: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Web origins (scheme://host[:port]) whose browser apps may call the API "
        "(CORS; '*' for any); empty: none. Such an app still needs a key when keys exist.",
    )
    dollars_per_hour: float = Field(
        0.0,
        ge=0,
        description="What this machine costs per hour: a request's cost is its share of it "
        "(duration / parallel slots) unless `prices` names the model.",
    )
    prices: dict[str, tuple[float, float]] = Field(
        default_factory=dict,
        description="Dollars per million input and output tokens per model, e.g. "
        '`"qwen3-8b" = [0.05, 0.2]` (a table in config.toml); used by usage and USD budgets.',
    )
    no_ui: bool = Field(
        False,
        description="Serve the API only: no web app at / (the API paths are the same either way).",
    )
    no_auth: bool = Field(
        False,
        description="Serve a non-loopback address (--host 0.0.0.0) with no API keys, on "
        "purpose: anyone who reaches the port may use every model.",
    )
    database_url: SecretStr | None = Field(
        None,
        description="The database for keys and usage: a SQLAlchemy URL such as "
        "postgresql+psycopg://user:pass@host/db (default: SQLite in KAIYUAN_HOME); never "
        "printed.",
    )
    # OpenTelemetry's own variables work too (a KAIYUAN_ variable wins over them).
    otel_endpoint: str | None = Field(
        None,
        validation_alias=AliasChoices("KAIYUAN_OTEL_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"),
        description="Export every API request and agent step as OpenTelemetry spans (GenAI "
        "conventions) to this OTLP/HTTP endpoint, e.g. http://localhost:4318 (also "
        "$OTEL_EXPORTER_OTLP_ENDPOINT; the `otel` extra). Unset: nothing is exported.",
    )
    otel_service_name: str = Field(
        "kaiyuan",
        min_length=1,
        validation_alias=AliasChoices("KAIYUAN_OTEL_SERVICE_NAME", "OTEL_SERVICE_NAME"),
        description="The service.name of exported spans (also $OTEL_SERVICE_NAME).",
    )
    header_timeout: float = Field(
        10.0, gt=0, description="Seconds a client has to send a request's headers."
    )
    body_timeout: float = Field(
        60.0, gt=0, description="Seconds a client has to send a request's body (408 past it)."
    )
    max_connections_per_client: int = Field(
        64, ge=1, description="Connections one client address may hold open at once."
    )
    max_n: int = Field(16, ge=1, le=128, description="Largest `n` (choices) per request.")
    prompt_cache: bool = Field(
        True,
        description="Reuse the cached start of a prompt (a conversation's earlier turns, a shared "
        "system prompt). false: every prompt is read in full, so a temperature-0 answer does not "
        "depend on earlier requests; requests choose with `cache_prompt`.",
    )
    strict_params: bool = Field(
        False,
        description="Refuse request fields kaiyuan does not know (400 naming the field). "
        "false: they are ignored with one warning in the log, as vLLM does.",
    )
    aliases: dict[str, str] = Field(
        default_factory=dict,
        description="Other names for models, on every surface, e.g. "
        '`"claude-sonnet-4-5" = "qwen3-coder-30b-a3b"` (a table in config.toml).',
    )
    max_images: int = Field(8, ge=0, description="Most images one chat request may carry.")
    max_image_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest image accepted (encoded bytes)."
    )
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Largest image accepted (width x height, before resizing)."
    )
    image_fetch_timeout: float = Field(
        10.0, gt=0, description="Seconds allowed to fetch one http(s) image URL."
    )
    stall_timeout: float = Field(
        300.0, gt=0, description="Seconds an engine may go silent before the request fails (504)."
    )
    ready_timeout: float = Field(
        30.0, gt=0, description="Seconds /ready waits for its 1-token generation."
    )
    retry_after: int = Field(1, ge=1, description="Retry-After seconds sent with 503s.")
    log_level: str = Field("info", description="Log level: debug, info, warning, error.")
    memory_budget: int | None = Field(
        None,
        ge=1,
        description="Bytes of memory loaded models may use (default: 75% of RAM); the least "
        "recently used idle model is unloaded to make room.",
    )
    keep_alive: float = Field(
        300.0,
        description="Seconds an idle model stays loaded (negative: forever). Models named "
        "with --model stay loaded.",
    )
    max_tokens: int = Field(
        4096,
        ge=0,
        description="Default length of a chat answer, in tokens, when neither the request "
        "nor the model's defaults set one (0: all the room left in the context).",
    )
    generation: dict[str, GenerationDefaults] = Field(
        default_factory=dict,
        description="Per model id, default sampling (temperature, top_p, top_k, min_p, "
        "repetition_penalty) and max_tokens over the model's own; set with `kaiyuan config "
        "set MODEL key=value` (a [generation.MODEL] table in config.toml).",
    )
    tool_parsers: dict[str, str] = Field(
        default_factory=dict,
        description="Tool-call syntax per model id, overriding detection from the template "
        f"({', '.join(TOOL_PARSERS)}).",
    )
    # Hub settings also read the variables the hubs' own SDKs document (HF_ENDPOINT for a
    # mirror such as https://hf-mirror.com, ...); a KAIYUAN_ variable wins over them.
    hf_endpoint: str = Field(
        "https://huggingface.co",
        validation_alias=AliasChoices("KAIYUAN_HF_ENDPOINT", "HF_ENDPOINT"),
        description="Hugging Face hub URL, or a mirror's (also $HF_ENDPOINT).",
    )
    hf_token: SecretStr | None = Field(
        None,
        validation_alias=AliasChoices("KAIYUAN_HF_TOKEN", "HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"),
        description="Hugging Face access token, sent to the hub for gated repos (also "
        "$HF_TOKEN); never printed.",
    )
    hf_hub_offline: bool = Field(
        False,
        validation_alias=AliasChoices(
            "KAIYUAN_HF_HUB_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"
        ),
        description="Never contact Hugging Face (also $HF_HUB_OFFLINE=1): pulls from it fail "
        "at once.",
    )
    ms_endpoint: str = Field(
        "https://www.modelscope.cn",
        validation_alias=AliasChoices(
            "KAIYUAN_MS_ENDPOINT", "MODELSCOPE_ENDPOINT", "MODELSCOPE_DOMAIN"
        ),
        description="ModelScope hub URL (also $MODELSCOPE_ENDPOINT).",
    )
    hub_timeout: float = Field(
        20.0, gt=0, description="Seconds to wait for a hub before giving up (per request)."
    )
    # --- image and video generation ---------------------------------------------------------------
    media_max_pixels: int = Field(
        64 * 1024 * 1024,
        ge=1024,
        description="Most pixels one image or video request may produce (width x height x "
        "images or frames): the memory guard for generation.",
    )

    # --- the agent and its tools ---------------------------------------------------------------
    sandbox_seconds: float = Field(
        10.0, gt=0, le=600, description="Wall-clock (and CPU) seconds one code run may take."
    )
    sandbox_memory_mb: int = Field(
        512, ge=32, description="Address space, in MiB, one code run may use."
    )
    search_provider: Literal["duckduckgo", "searxng", "docs"] = Field(
        "duckduckgo", description="Web search: duckduckgo (no key), searxng (searxng_url), docs."
    )
    searxng_url: str | None = Field(None, description="A SearXNG instance, e.g. http://host:8888")
    search_cache_seconds: float = Field(
        3600.0, ge=0, description="Seconds a search result is reused from the cache."
    )
    fetch_max_bytes: int = Field(
        5 * 1024 * 1024, ge=1024, description="Largest page the fetch tool reads."
    )
    fetch_timeout: float = Field(15.0, gt=0, description="Seconds the fetch tool may take.")
    fetch_allow_private: bool = Field(
        False,
        description="Let the fetch tool reach private and loopback addresses (an intranet); "
        "off by default, so a page or a model cannot make kaiyuan reach this machine.",
    )
    agent_max_steps: int = Field(8, ge=1, le=100, description="Model calls per agent run.")
    agent_max_seconds: float = Field(
        300.0, gt=0, description="Seconds one agent run may take in all (starting the model too)."
    )
    agent_max_tokens: int = Field(
        1024, ge=16, description="Tokens the model may write in one agent step."
    )
    agent_allowed_tools: list[str] = Field(
        default_factory=list,
        description="Tools with side effects (MCP tools) the agent may run without asking.",
    )
    mcp_servers: dict[str, McpServer] = Field(
        default_factory=dict,
        description="MCP servers whose tools join the agent's, by name: {command, args, env} "
        "for stdio or {url, headers} for streamable HTTP (set in config.toml).",
    )

    def db_url(self) -> str | None:
        """``database_url`` in clear, for the database engine only (None: SQLite in home)."""
        return self.database_url.get_secret_value() if self.database_url else None

    @field_validator("hf_hub_offline", mode="before")
    @classmethod
    def _hf_truthy(cls, value: Any) -> Any:
        # As huggingface_hub reads it: 1/ON/YES/TRUE is offline, anything else is not.
        if isinstance(value, str):
            return value.strip().upper() in ("1", "ON", "YES", "TRUE")
        return value

    @field_validator("hf_token", mode="before")
    @classmethod
    def _no_empty_token(cls, value: Any) -> Any:
        return None if isinstance(value, str) and not value.strip() else value

    @field_validator("ms_endpoint", mode="before")
    @classmethod
    def _ms_scheme(cls, value: Any) -> Any:
        # MODELSCOPE_DOMAIN is a bare host name; the SDK prepends https:// the same way.
        if isinstance(value, str) and not value.lower().startswith(("http://", "https://")):
            return f"https://{value.strip()}"
        return value

    @field_validator("models", "allowed_hosts", "cors_origins", mode="before")
    @classmethod
    def _split_list(cls, value: Any) -> Any:
        # KAIYUAN_MODELS=a,b is friendlier than JSON in a shell; JSON works too.
        if isinstance(value, str) and value.lstrip().startswith("["):
            return json.loads(value)
        if isinstance(value, str):
            return [m.strip() for m in value.split(",") if m.strip()]
        return value

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: list[str]) -> list[str]:
        # As browsers send Origin: scheme://host[:port], nothing after it, lower case.
        origins = []
        for raw in value:
            origin = raw.strip().rstrip("/").lower()
            if origin != "*" and not re.fullmatch(r"https?://[^/?#\s@]+", origin):
                raise ValueError(f"{raw!r} is not an origin like https://app.example.com:8443")
            origins.append(origin)
        return origins

    @field_validator("tool_parsers")
    @classmethod
    def _known_parsers(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value.values()) - set(TOOL_PARSERS))
        if unknown:
            raise ValueError(
                f"unknown tool parser {unknown[0]!r}; known: {', '.join(TOOL_PARSERS)}"
            )
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml = TomlConfigSettingsSource(settings_cls, toml_file=config_file())
        return (init_settings, env_settings, toml)


def load_settings(**overrides: Any) -> Settings:
    """Settings with CLI-style overrides; ``None`` means "flag not given"."""
    return Settings(**{k: v for k, v in overrides.items() if v is not None})
