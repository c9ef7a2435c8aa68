"""OpenTelemetry export of API requests and agent runs (the ``otel`` extra).

Only when ``otel_endpoint`` is set (or the standard ``OTEL_EXPORTER_OTLP_ENDPOINT``): spans go
to ``ENDPOINT/v1/traces`` over OTLP/HTTP (protobuf), batched and sent by the SDK's own thread,
so a request never waits on the collector. Names and attributes follow OpenTelemetry's GenAI
semantic conventions, which Langfuse, Phoenix, Jaeger and Grafana Tempo read:

- every API request: one SERVER span when it is done, ``chat MODEL`` / ``text_completion MODEL``
  / ``embeddings MODEL`` / ``generate_content MODEL`` (other routes: ``METHOD /route``), with
  the model, tokens, finish reason and HTTP status; the child of a ``traceparent`` it carries;
- every agent run: ``invoke_agent kaiyuan``, with a ``chat MODEL`` child per model turn (its
  ``traceparent`` goes with the chat request, so the server's span nests under it) and an
  ``execute_tool NAME`` child per tool call.

What a user wrote or a model answered (prompts, outputs, tool arguments and results) and keys
never go on a span: model ids, token counts, finish reasons, tool names and statuses do.

Each app (and each ``kaiyuan agent`` run) owns its TracerProvider; the process-wide one is left
alone. Nothing here imports the SDK until an exporter is built.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from kaiyuan import __version__, extras
from kaiyuan.config import Settings

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)

PROVIDER = "kaiyuan"  # gen_ai.provider.name: who runs the model
AGENT = "kaiyuan"  # gen_ai.agent.name
TRACES_PATH = "/v1/traces"
# The API routes whose POSTs are GenAI operations (the conventions' operation names).
OPERATIONS = {
    "/v1/chat/completions": "chat",
    "/v1/messages": "chat",
    "/api/chat": "chat",
    "/v1/completions": "text_completion",
    "/api/generate": "text_completion",
    "/v1/embeddings": "embeddings",
    "/api/embed": "embeddings",
    "/api/embeddings": "embeddings",
    "/v1/images/generations": "generate_content",
    "/v1/videos": "generate_content",
}


class Finished(Protocol):
    """What the server knows of a request once it is done (its usage row, server/usage.py)."""

    @property
    def model(self) -> str | None: ...
    @property
    def endpoint(self) -> str: ...
    @property
    def status(self) -> int: ...
    @property
    def prompt_tokens(self) -> int: ...
    @property
    def cached_tokens(self) -> int: ...
    @property
    def completion_tokens(self) -> int: ...
    @property
    def finish_reason(self) -> str | None: ...
    @property
    def duration_ms(self) -> float: ...
    @property
    def cancelled(self) -> bool: ...


def traces_url(endpoint: str) -> str:
    """The OTLP/HTTP traces URL of a base endpoint, as the SDK reads OTEL_EXPORTER_OTLP_ENDPOINT
    (a URL that already ends in /v1/traces is kept)."""
    endpoint = endpoint.strip().rstrip("/")
    return endpoint if endpoint.endswith(TRACES_PATH) else endpoint + TRACES_PATH


class Telemetry:
    """A span exporter: its own TracerProvider with a batching OTLP/HTTP processor."""

    def __init__(self, endpoint: str, service: str = "kaiyuan") -> None:
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.trace import TracerProvider
            from opentelemetry.sdk.trace.export import BatchSpanProcessor
        except ModuleNotFoundError as exc:
            missing = extras.for_missing(exc, "exporting traces (otel_endpoint)")
            if missing is None:
                raise
            raise missing from None
        self.endpoint = traces_url(endpoint)
        # shutdown_on_exit (the default): what is still queued is sent when the process ends.
        self.provider = TracerProvider(resource=Resource.create({"service.name": service}))
        self.provider.add_span_processor(
            BatchSpanProcessor(OTLPSpanExporter(endpoint=self.endpoint))
        )
        self.tracer: Tracer = self.provider.get_tracer("kaiyuan", __version__)

    @classmethod
    def configured(cls, settings: Settings) -> Telemetry | None:
        """The exporter ``settings`` ask for, else None (nothing is exported); raises
        FeatureNotInstalled naming the ``otel`` extra when its packages are missing."""
        endpoint = (settings.otel_endpoint or "").strip()
        return cls(endpoint, settings.otel_service_name) if endpoint else None

    def shutdown(self) -> None:
        """Send what is queued and stop (the process's exit does the same)."""
        self.provider.shutdown()

    def request(self, done: Finished, scope: Mapping[str, Any]) -> None:
        """One SERVER span for a finished API request (``scope``: its ASGI scope)."""
        try:
            self._request(done, scope)
        except Exception:  # telemetry must never fail a request
            log.exception("the request's span could not be recorded")

    def _request(self, done: Finished, scope: Mapping[str, Any]) -> None:
        from opentelemetry.trace import SpanKind, StatusCode
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        end = time.time_ns()
        method = str(scope.get("method", ""))
        route = getattr(scope.get("route"), "path", None) or done.endpoint
        operation = OPERATIONS.get(route) if method == "POST" else None
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        attributes: dict[str, Any] = {
            "http.request.method": method,
            "http.route": route,
            "url.path": done.endpoint,
            "http.response.status_code": done.status,
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.system": PROVIDER,  # the name before semantic conventions 1.37
        }
        if done.model:
            attributes["gen_ai.request.model"] = done.model
            attributes["gen_ai.response.model"] = done.model
        if operation is not None:
            attributes["gen_ai.operation.name"] = operation
            attributes["gen_ai.usage.input_tokens"] = done.prompt_tokens
            if operation != "embeddings":
                attributes["gen_ai.usage.output_tokens"] = done.completion_tokens
            if done.cached_tokens:
                attributes["gen_ai.usage.cache_read.input_tokens"] = done.cached_tokens
        if done.finish_reason:
            attributes["gen_ai.response.finish_reasons"] = [done.finish_reason]
        if done.cancelled:
            attributes["kaiyuan.cancelled"] = True
        if operation is not None:
            name = f"{operation} {done.model}" if done.model else operation
        else:
            name = f"{method} {route}"
        span = self.tracer.start_span(
            name,
            context=TraceContextTextMapPropagator().extract(headers),
            kind=SpanKind.SERVER,
            attributes=attributes,
            start_time=end - int(done.duration_ms * 1e6),
        )
        if done.status >= 500 or done.cancelled:
            error = "cancelled" if done.cancelled else str(done.status)
            span.set_attribute("error.type", error)
            span.set_status(StatusCode.ERROR)
        span.end(end_time=end)

    def agent(self, model: str, run_id: str) -> RunSpans:
        """The spans of one agent run, started now."""
        from opentelemetry.trace import SpanKind

        span = self.tracer.start_span(
            f"invoke_agent {AGENT}",
            kind=SpanKind.INTERNAL,
            attributes={
                "gen_ai.operation.name": "invoke_agent",
                "gen_ai.agent.name": AGENT,
                "gen_ai.provider.name": PROVIDER,
                "gen_ai.system": PROVIDER,
                "gen_ai.request.model": model,
                "kaiyuan.agent.run_id": run_id,  # `kaiyuan trace RUN_ID` shows the steps
            },
        )
        return RunSpans(self.tracer, span)


class StepSpan:
    """One model turn or tool call of an agent run; without a span (``NOTHING``'s steps) it
    records nothing."""

    def __init__(self, span: Span | None = None, run: RunSpans | None = None) -> None:
        self.span = span
        self.run = run

    def headers(self) -> dict[str, str]:
        """The W3C ``traceparent`` to send with the step's request (none without a span)."""
        if self.span is None:
            return {}
        from opentelemetry.trace import set_span_in_context
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        carrier: dict[str, str] = {}
        TraceContextTextMapPropagator().inject(carrier, set_span_in_context(self.span))
        return carrier

    def end(
        self,
        *,
        error: str | None = None,
        response_model: str | None = None,
        response_id: str | None = None,
        finish_reason: str | None = None,
        input_tokens: int | None = None,
        output_tokens: int | None = None,
    ) -> None:
        """The step is over; ``error``: its error.type, when it failed."""
        if self.span is None or self.run is None or self not in self.run.open:
            return
        from opentelemetry.trace import StatusCode

        self.run.open.remove(self)
        attributes: dict[str, Any] = {
            "gen_ai.response.model": response_model,
            "gen_ai.response.id": response_id,
            "gen_ai.response.finish_reasons": [finish_reason] if finish_reason else None,
            "gen_ai.usage.input_tokens": input_tokens,
            "gen_ai.usage.output_tokens": output_tokens,
            "error.type": error,
        }
        self.span.set_attributes({k: v for k, v in attributes.items() if v is not None})
        if error is not None:
            self.span.set_status(StatusCode.ERROR)
        self.span.end()


class RunSpans:
    """The spans of one agent run; without a tracer (``NOTHING``) it records nothing, at no
    cost."""

    def __init__(self, tracer: Tracer | None = None, span: Span | None = None) -> None:
        self.tracer = tracer
        self.span = span
        self.open: list[StepSpan] = []  # steps not ended yet: the run's end ends them

    def _step(self, name: str, kind: str, attributes: dict[str, Any]) -> StepSpan:
        if self.tracer is None or self.span is None:
            return StepSpan()
        from opentelemetry.trace import SpanKind, set_span_in_context

        span = self.tracer.start_span(
            name,
            context=set_span_in_context(self.span),
            kind=SpanKind[kind],
            attributes=attributes,
        )
        step = StepSpan(span, self)
        self.open.append(step)
        return step

    def turn(self, model: str, temperature: float, max_tokens: int | None) -> StepSpan:
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "gen_ai.provider.name": PROVIDER,
            "gen_ai.system": PROVIDER,
            "gen_ai.request.model": model,
            "gen_ai.request.temperature": temperature,
        }
        if max_tokens is not None:
            attributes["gen_ai.request.max_tokens"] = max_tokens
        return self._step(f"chat {model}", "CLIENT", attributes)

    def tool(self, name: str, call_id: str) -> StepSpan:
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": name,
            "gen_ai.tool.call.id": call_id,
            "gen_ai.tool.type": "function",
        }
        return self._step(f"execute_tool {name}", "INTERNAL", attributes)

    def end(
        self,
        *,
        stop_reason: str | None = None,
        usage: Mapping[str, int] | None = None,
        error: BaseException | None = None,
    ) -> None:
        """The run is over: its totals, or the exception that ended it."""
        if self.span is None or not self.span.is_recording():  # nothing, or ended already
            return
        from opentelemetry.trace import StatusCode

        failure = type(error).__name__ if error is not None else None
        for step in list(self.open):  # cut short (a cancelled run): ended with the run
            step.end(error=failure or "unfinished")
        if usage:
            self.span.set_attribute("gen_ai.usage.input_tokens", usage.get("prompt_tokens", 0))
            self.span.set_attribute("gen_ai.usage.output_tokens", usage.get("completion_tokens", 0))
        if stop_reason:
            self.span.set_attribute("kaiyuan.agent.stop_reason", stop_reason)
        if failure is not None:
            self.span.set_attribute("error.type", failure)
            self.span.set_status(StatusCode.ERROR)
        self.span.end()


NOTHING = RunSpans()
