"""GET /metrics while requests queue: requests waiting for a slot, the queue-time histogram and
each loaded model's memory, parsed with prometheus_client's own parser."""

from __future__ import annotations

import threading
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import MODEL
from tests.harness import KaiyuanServer, wait_for

pytestmark = pytest.mark.slow
NO_EOS = {"0": -100, "2": -100}


def scrape(url: str) -> dict[tuple[str, str], float]:
    """``(sample name, model_name) -> value`` of every sample labelled with a model."""
    found: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(httpx.get(url + "/metrics").text):
        for sample in family.samples:
            if sample.labels.get("model_name") and "le" not in sample.labels:
                found[(sample.name, sample.labels["model_name"])] = sample.value
    return found


def test_waiting_requests_queue_time_and_model_memory(tmp_path: Path) -> None:
    with KaiyuanServer(home=tmp_path, args=["--parallel", "1"]) as server:
        body = {"model": MODEL, "prompt": "Once", "max_tokens": 150, "logit_bias": NO_EOS}
        done: list[int] = []

        def send() -> None:
            reply = httpx.post(server.url + "/v1/completions", json=body, timeout=120)
            done.append(reply.status_code)

        senders = [threading.Thread(target=send) for _ in range(3)]
        for sender in senders:
            sender.start()
        seen = {"waiting": 0.0, "running": 0.0}

        def queued() -> bool:
            now = scrape(server.url)
            seen["waiting"] = max(
                seen["waiting"], now.get(("kaiyuan:num_requests_waiting", MODEL), 0)
            )
            seen["running"] = max(
                seen["running"], now.get(("kaiyuan:num_requests_running", MODEL), 0)
            )
            return seen["waiting"] >= 1 and seen["running"] == 1

        assert wait_for(queued, 60), seen  # one slot: one runs, the others wait
        for sender in senders:
            sender.join(120)
        assert done == [200, 200, 200]
        metrics = scrape(server.url)
        assert metrics[("kaiyuan:request_queue_time_seconds_count", MODEL)] == 3
        # the second and third waited for whole generations before them
        assert metrics[("kaiyuan:request_queue_time_seconds_sum", MODEL)] > 0.05
        assert metrics[("kaiyuan:num_requests_waiting", MODEL)] == 0
        assert metrics[("kaiyuan:num_requests_running", MODEL)] == 0
        assert metrics[("kaiyuan:model_memory_bytes", MODEL)] > 50_000_000  # 135M parameters
