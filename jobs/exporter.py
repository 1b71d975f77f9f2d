"""Prometheus metrics of the jobs process on 127.0.0.1:METRICS_PORT: the latest probe run's check (the same
metrics as `check --prometheus`, monitor.metrics), whether this process leads, and each job's last success."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from monitor import metrics


class JobsCollector(Collector):
    """Reads the process's state at each scrape, so the metrics are as fresh as the last probe run."""

    def __init__(self, state: Callable[[], tuple[object | None, bool, dict[str, float]]]):
        self.state = state  # () -> (latest CheckReport or None, leading, {job: last success unix time})

    def collect(self) -> Iterator:
        report, leading, last_ok = self.state()
        if report is not None:
            yield from metrics.registry_for(report).collect()
        yield GaugeMetricFamily(
            f"{metrics.PREFIX}_scheduler_leader",
            "1 while this jobs process holds the lease and runs the jobs.",
            value=1 if leading else 0,
        )
        ok = GaugeMetricFamily(
            f"{metrics.PREFIX}_job_last_success_timestamp_seconds",
            "When each scheduled job last succeeded in this process (unix time).",
            labels=["job"],
        )
        for job, at in sorted(last_ok.items()):
            ok.add_metric([job], at)
        yield ok


def serve(port: int, state: Callable) -> None:
    """Serve the metrics from a daemon thread; OSError when the port cannot be bound."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobsCollector(state))
    start_http_server(port, addr="127.0.0.1", registry=registry)
