"""OpenTelemetry export (issue 19 item 5): with an OTLP endpoint configured, every API request
and every agent step reaches an OTLP/HTTP receiver on loopback as spans with OpenTelemetry's
GenAI attributes, nested as Jaeger or Langfuse would show them; no prompt, answer or key goes on
a span; nothing is exported unless configured."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from kaiyuan.config import Settings
from kaiyuan.otel import Telemetry, traces_url
from tests.conftest import MODEL as REAL_MODEL
from tests.harness import KaiyuanServer, wait_for
from tests.test_responses import CODE, MODEL, call, say, serving

pytestmark = pytest.mark.slow

SECRET = "Quillon-5521"  # written by the user and the model: must not be on any span
PARENT_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_SPAN = "00f067aa0ba902b7"


def value(any_value: AnyValue) -> Any:
    kind = any_value.WhichOneof("value")
    if kind == "array_value":
        return [value(v) for v in any_value.array_value.values]
    return getattr(any_value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP (protobuf) trace receiver on 127.0.0.1, as a collector listens on :4318."""

    def __init__(self) -> None:
        self.spans: list[tuple[dict[str, Any], Span]] = []  # (resource attributes, span)
        self.lock = threading.Lock()
        receiver = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                ok = self.path == "/v1/traces" and (
                    self.headers["Content-Type"] == "application/x-protobuf"
                )
                if ok:
                    request = ExportTraceServiceRequest.FromString(body)
                    with receiver.lock:
                        for resource in request.resource_spans:
                            attrs = {a.key: value(a.value) for a in resource.resource.attributes}
                            for scope in resource.scope_spans:
                                receiver.spans += [(attrs, span) for span in scope.spans]
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200 if ok else 404)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def named(self, prefix: str) -> list[Span]:
        with self.lock:
            return [span for _, span in self.spans if span.name.startswith(prefix)]

    def everything(self) -> list[tuple[dict[str, Any], Span]]:
        with self.lock:
            return list(self.spans)

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[Receiver]:
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # the batch leaves within 50 ms
    got = Receiver()
    yield got
    got.close()


def attributes(span: Span) -> dict[str, Any]:
    return {a.key: value(a.value) for a in span.attributes}


def test_nothing_is_exported_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT", raising=False)
    monkeypatch.delenv("KAIYUAN_OTEL_ENDPOINT", raising=False)
    assert Telemetry.configured(Settings()) is None
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:4318/")
    configured = Telemetry.configured(Settings())
    assert configured is not None and configured.endpoint == "http://127.0.0.1:4318/v1/traces"
    configured.shutdown()
    monkeypatch.setenv("KAIYUAN_OTEL_ENDPOINT", "http://collector:4318/v1/traces")
    assert Settings().otel_endpoint == "http://collector:4318/v1/traces"  # kaiyuan's own wins
    assert traces_url("http://collector:4318/v1/traces") == "http://collector:4318/v1/traces"


def test_a_chat_request_is_a_server_span_under_the_callers_trace(
    tmp_path: Path, receiver: Receiver
) -> None:
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_SERVICE_NAME": "team-llm",
           "OTEL_BSP_SCHEDULE_DELAY": "50"}  # fmt: skip
    with KaiyuanServer(home=tmp_path, env=env) as server:
        reply = httpx.post(
            server.url + "/v1/chat/completions",
            json={"model": REAL_MODEL, "max_tokens": 5,
                  "messages": [{"role": "user", "content": f"Say {SECRET}"}]},
            headers={"traceparent": f"00-{PARENT_TRACE}-{PARENT_SPAN}-01"},
            timeout=60,
        )  # fmt: skip
        assert reply.status_code == 200, reply.text
        usage = reply.json()["usage"]
        missing = httpx.get(server.url + "/v1/models/nope", timeout=10)
        assert missing.status_code == 404
        assert wait_for(lambda: receiver.named(f"chat {REAL_MODEL}"), 20), server.log()
        assert wait_for(lambda: receiver.named("GET "), 20)
    [span] = receiver.named(f"chat {REAL_MODEL}")
    assert span.kind == Span.SPAN_KIND_SERVER
    assert span.trace_id.hex() == PARENT_TRACE and span.parent_span_id.hex() == PARENT_SPAN
    found = attributes(span)
    assert found["gen_ai.operation.name"] == "chat"
    assert found["gen_ai.request.model"] == found["gen_ai.response.model"] == REAL_MODEL
    assert found["gen_ai.usage.input_tokens"] == usage["prompt_tokens"]
    assert found["gen_ai.usage.output_tokens"] == usage["completion_tokens"]
    assert found["gen_ai.response.finish_reasons"] == [reply.json()["choices"][0]["finish_reason"]]
    assert found["http.response.status_code"] == 200 and found["http.route"] == (
        "/v1/chat/completions"
    )
    assert span.end_time_unix_nano > span.start_time_unix_nano
    [other] = receiver.named("GET ")
    assert other.name == "GET /v1/models/{model_id:path}" and len(other.parent_span_id) == 0
    assert attributes(other)["http.response.status_code"] == 404
    for resource, span in receiver.everything():
        assert resource["service.name"] == "team-llm"
        assert SECRET not in str(span) and "Say" not in str(attributes(span))


def test_an_agent_run_is_one_trace_of_model_turns_and_tool_calls(
    tmp_path: Path, receiver: Receiver
) -> None:
    with serving(tmp_path / "home", otel_endpoint=receiver.url) as served:
        script = [call("code", code=f"print('{SECRET}'[::-1])"), say(f"It is {SECRET}.")]
        response = served.create(*script, input=f"Reverse {SECRET}.", tools=[CODE])
        assert response.status == "completed"
        assert wait_for(lambda: receiver.named("invoke_agent"), 20)
        assert wait_for(lambda: len(receiver.named(f"chat {MODEL}")) == 4, 20)
    [run] = receiver.named("invoke_agent kaiyuan")
    run_attrs = attributes(run)
    assert run_attrs["gen_ai.operation.name"] == "invoke_agent"
    assert run_attrs["gen_ai.request.model"] == MODEL
    assert run_attrs["gen_ai.usage.input_tokens"] == response.usage.input_tokens
    assert run_attrs["gen_ai.usage.output_tokens"] == response.usage.output_tokens
    assert len(run.parent_span_id) == 0  # the run is the root
    # the Responses request itself: a SERVER span of its own
    [route] = receiver.named("POST /v1/responses")
    assert route.kind == Span.SPAN_KIND_SERVER
    chats = receiver.named(f"chat {MODEL}")
    turns = [s for s in chats if s.kind == Span.SPAN_KIND_CLIENT]
    served_turns = [s for s in chats if s.kind == Span.SPAN_KIND_SERVER]
    assert len(turns) == len(served_turns) == 2
    for turn in turns:
        assert turn.trace_id == run.trace_id and turn.parent_span_id == run.span_id
        turn_attrs = attributes(turn)
        assert turn_attrs["gen_ai.operation.name"] == "chat"
        assert turn_attrs["gen_ai.usage.output_tokens"] > 0
    # the chat route's span of each turn nests under that turn (its traceparent went along)
    assert {s.parent_span_id for s in served_turns} == {t.span_id for t in turns}
    [tool] = receiver.named("execute_tool")
    assert tool.name == "execute_tool code" and tool.parent_span_id == run.span_id
    tool_attrs = attributes(tool)
    assert tool_attrs["gen_ai.tool.name"] == "code" and tool_attrs["gen_ai.tool.call.id"]
    first, second = sorted(turns, key=lambda s: s.start_time_unix_nano)
    assert first.end_time_unix_nano <= tool.start_time_unix_nano
    assert tool.end_time_unix_nano <= second.start_time_unix_nano
    for _, span in receiver.everything():
        assert SECRET not in str(span) and SECRET[::-1] not in str(span)
