"""GET /metrics: Prometheus's text format, with vLLM's metric meanings and suffixes under a
``kaiyuan:`` prefix (``vllm:time_to_first_token_seconds`` is ``kaiyuan:time_to_first_token_
seconds``), so a vLLM dashboard adapts by renaming. One registry per app (two apps can share a
process). Open without a key, as vLLM's and most exporters' are: it carries model names and
counts, never a prompt or a key.

Per ``model_name``: requests running and waiting, prompt and generation tokens, prefix-cache
queries and hits (prompt tokens looked up, and found), finished requests by reason, and
histograms of time to first token, inter-token latency, end-to-end latency and queue time; HTTP
requests by route and status; models loaded and the memory each is counted at. Observed once
per request, when its response is done (server/usage.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram
from prometheus_client import generate_latest as render
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from kaiyuan.server.serving.meter import Meter

# vLLM's buckets (vllm/v1/metrics/loggers.py)
TTFT = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5,
        10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)  # fmt: skip
ITL = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
       20.0, 40.0, 80.0)  # fmt: skip
E2E = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
       240.0, 480.0, 960.0, 1920.0, 7680.0)  # fmt: skip
MODEL = ["model_name"]
CONTENT_TYPE = CONTENT_TYPE_LATEST


class _Pool(Collector):
    """Gauges read from the pool when scraped: requests running and waiting, models loaded
    and their memory."""

    def __init__(self, state: Any) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        pool = getattr(self.state, "pool", None)
        if pool is None:
            return
        loaded = pool.loaded()
        running = GaugeMetricFamily(
            "kaiyuan:num_requests_running", "Requests in a model's batch.", labels=MODEL
        )
        waiting = GaugeMetricFamily(
            "kaiyuan:num_requests_waiting", "Requests waiting for a free slot.", labels=MODEL
        )
        models = GaugeMetricFamily("kaiyuan:model_loaded", "1 per loaded model.", labels=MODEL)
        memory = GaugeMetricFamily(
            "kaiyuan:model_memory_bytes",
            "Memory a loaded model is counted at (weights and caches, as the pool budgets it).",
            labels=MODEL,
        )
        for name, engine in loaded.items():
            queued = engine.waiting
            running.add_metric([name], engine.in_flight - queued)
            waiting.add_metric([name], queued)
            models.add_metric([name], 1)
            memory.add_metric([name], pool.memory_of(name))
        yield from (running, waiting, models, memory)


class Metrics:
    def __init__(self, state: Any) -> None:
        self.state = state
        self.registry = CollectorRegistry()
        r = self.registry
        self.prompt_tokens = Counter(
            "kaiyuan:prompt_tokens", "Prompt tokens of finished requests.", MODEL, registry=r
        )
        self.generation_tokens = Counter(
            "kaiyuan:generation_tokens", "Generated tokens.", MODEL, registry=r
        )
        self.cache_queries = Counter(
            "kaiyuan:prefix_cache_queries", "Prompt tokens looked up in the prefix cache.",
            MODEL, registry=r,
        )  # fmt: skip
        self.cache_hits = Counter(
            "kaiyuan:prefix_cache_hits", "Prompt tokens found in the prefix cache (reused).",
            MODEL, registry=r,
        )  # fmt: skip
        self.success = Counter(
            "kaiyuan:request_success", "Finished requests by finish reason.",
            [*MODEL, "finished_reason"], registry=r,
        )  # fmt: skip
        self.ttft = Histogram(
            "kaiyuan:time_to_first_token_seconds", "Time to the first generated text.",
            MODEL, buckets=TTFT, registry=r,
        )  # fmt: skip
        self.itl = Histogram(
            "kaiyuan:inter_token_latency_seconds", "Time between generated pieces of text.",
            MODEL, buckets=ITL, registry=r,
        )  # fmt: skip
        self.e2e = Histogram(
            "kaiyuan:e2e_request_latency_seconds", "Request arrival to response end.",
            MODEL, buckets=E2E, registry=r,
        )  # fmt: skip
        self.queue = Histogram(
            "kaiyuan:request_queue_time_seconds", "Time a request waited for a free slot.",
            MODEL, buckets=E2E, registry=r,
        )  # fmt: skip
        self.http = Counter(
            "kaiyuan:http_requests", "HTTP requests by route and status.",
            ["route", "status"], registry=r,
        )  # fmt: skip
        r.register(_Pool(state))

    def observe(self, route: str, status: int, meter: Meter, duration: float) -> None:
        self.http.labels(route, str(status)).inc()
        if not meter.finished or meter.model is None:
            return
        pool = getattr(self.state, "pool", None)
        model = pool.canonical(meter.model) if pool is not None else meter.model
        self.prompt_tokens.labels(model).inc(meter.prompt_tokens)
        self.generation_tokens.labels(model).inc(meter.completion_tokens)
        self.cache_queries.labels(model).inc(meter.prompt_tokens)
        self.cache_hits.labels(model).inc(meter.cached_tokens)
        self.success.labels(model, meter.finish_reason or "stop").inc(meter.finished)
        if meter.first_token is not None:
            self.ttft.labels(model).observe(meter.first_token - meter.started)
        itl = self.itl.labels(model)
        for gap in meter.gaps:
            itl.observe(gap)
        self.e2e.labels(model).observe(duration)
        if meter.queued is not None:
            self.queue.labels(model).observe(meter.queued)

    def text(self) -> bytes:
        return render(self.registry)
