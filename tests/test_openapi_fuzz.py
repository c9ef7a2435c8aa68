"""Every operation of /openapi.json fuzzed by schemathesis (security guide T3, issue 14): no
malformed request may get a 5xx, and answers match the documented schema. Bounded: a fixed
number of examples per operation against a scripted engine over a real socket."""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import checks

from kaiyuan.config import Settings
from kaiyuan.engines.pool import EnginePool
from kaiyuan.server import create_app
from tests.fakes import ScriptedEngine
from tests.harness import serve_app

EXAMPLES = 50  # per operation
# Not positive_data_acceptance: cross-field rules (a tool message needs its call id) make some
# schema-valid requests a 400, which the schema cannot express.
CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
]


def test_no_operation_answers_a_malformed_request_with_a_5xx() -> None:
    engine = ScriptedEngine("fake-model", context_length=4096, capacity=64)
    failures: dict[str, str] = {}
    seen: list[str] = []
    with serve_app(create_app(Settings(), EnginePool([engine]))) as url:
        api = schemathesis.openapi.from_url(url + "/openapi.json")
        for result in api.get_all_operations():
            operation = result.ok()
            seen.append(operation.label)

            @settings(max_examples=EXAMPLES, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))  # fmt: skip
            @given(case=operation.as_strategy())
            def fuzz(case: Any) -> None:
                case.call_and_validate(checks=CHECKS, timeout=30)

            try:
                fuzz()
            except Exception as exc:  # collect all, then fail with every operation's reason
                failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    assert len(seen) >= 10, seen
    assert not failures, "\n\n".join(f"{k}: {v}" for k, v in failures.items())
