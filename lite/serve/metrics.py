"""Prometheus metrics: request counts by status, tokens, latencies, and the engine's queues and KV blocks.

One registry per app (no process-global state), so several servers in one process, as in tests,
keep their own counts. Engine gauges are read when /metrics is scraped, not pushed each step.
"""
from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from lite.engine.outputs import RequestOutput

LATENCY_BUCKETS = (0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0,
                   10.0, 20.0, 40.0, 80.0)


class EngineCollector:
    """Gauges read from LLMEngine.stats() at scrape time (plain int reads, safe across threads)."""

    def __init__(self, engine, gate):
        self.engine, self.gate = engine, gate

    def collect(self):
        stats = self.engine.stats()
        gauges = {
            "lite_num_requests_running": ("sequences being decoded or prefilled", stats["num_running"]),
            "lite_num_requests_waiting": ("sequences queued in the engine", stats["num_waiting"]),
            "lite_num_seqs_admitted": ("sequences the server has admitted and not finished",
                                       self.gate.num_admitted_seqs),
            "lite_kv_blocks_total": ("KV cache blocks", stats["num_kv_blocks"]),
            "lite_kv_blocks_free": ("KV cache blocks not held by any sequence", stats["num_free_kv_blocks"]),
            "lite_kv_blocks_used": ("KV cache blocks held by sequences",
                                    stats["num_kv_blocks"] - stats["num_free_kv_blocks"]),
        }
        queried = stats["prefix_cache_queried_tokens"]
        gauges["lite_prefix_cache_hit_rate"] = (
            "share of prompt tokens served from the prefix cache",
            stats["prefix_cache_hit_tokens"] / queried if queried else 0.0)
        for name, (doc, value) in gauges.items():
            yield GaugeMetricFamily(name, doc, value=value)
        counters = {
            "lite_prefix_cache_queried_tokens": ("prompt tokens looked up in the prefix cache",
                                                 queried),
            "lite_prefix_cache_hit_tokens": ("prompt tokens found in the prefix cache",
                                             stats["prefix_cache_hit_tokens"]),
            "lite_preemptions": ("sequences preempted for lack of KV blocks", stats["num_preemptions"]),
            "lite_requests_refused": ("requests refused with 503 because the server was at capacity",
                                      self.gate.num_refused),
        }
        for name, (doc, value) in counters.items():
            yield CounterMetricFamily(name, doc, value=value)


class Metrics:
    def __init__(self, engine, gate):
        self.registry = CollectorRegistry()
        self.http_requests = Counter("lite_http_requests", "HTTP requests by route and status code",
                                     ["route", "status"], registry=self.registry)
        self.prompt_tokens = Counter("lite_prompt_tokens", "prompt tokens of finished sequences",
                                     registry=self.registry)
        self.generation_tokens = Counter("lite_generation_tokens", "tokens generated",
                                         registry=self.registry)
        self.finished = Counter("lite_sequences_finished", "finished sequences by finish reason",
                                ["finish_reason"], registry=self.registry)
        self.time_to_first_token = Histogram(
            "lite_time_to_first_token_seconds", "from the request's arrival to its first token",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.inter_token_latency = Histogram(
            "lite_inter_token_latency_seconds", "between consecutive tokens of one sequence",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.request_latency = Histogram(
            "lite_e2e_request_latency_seconds", "from the request's arrival to its last token",
            buckets=LATENCY_BUCKETS, registry=self.registry)
        self.registry.register(EngineCollector(engine, gate))


class SequenceTimer:
    """Feeds one sequence's token timings and counts into the metrics as its outputs arrive."""

    def __init__(self, metrics: Metrics, arrival: float):
        self.metrics, self.arrival = metrics, arrival
        self.last_token_time: float | None = None
        self.num_tokens = 0

    def on_output(self, output: RequestOutput) -> None:
        now = time.perf_counter()
        if len(output.token_ids) > self.num_tokens:
            if self.last_token_time is None:
                self.metrics.time_to_first_token.observe(now - self.arrival)
            else:
                self.metrics.inter_token_latency.observe(now - self.last_token_time)
            self.last_token_time = now
            self.metrics.generation_tokens.inc(len(output.token_ids) - self.num_tokens)
            self.num_tokens = len(output.token_ids)
        if output.finished:
            self.metrics.prompt_tokens.inc(len(output.prompt_token_ids))
            self.metrics.finished.labels(output.finish_reason).inc()
            self.metrics.request_latency.observe(now - self.arrival)
