"""Prometheus metrics of one check: open findings, amount at risk, each component's state and latency, the
age of the last sync. Written in the text format for node_exporter's textfile collector (`check
--prometheus FILE`); the jobs process serves the same registry over HTTP."""

from __future__ import annotations

from pathlib import Path

from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from monitor.rules.findings import KINDS
from monitor.rules.money import minor_units_per_major

PREFIX = "payment_monitor"
STATES = ("up", "degraded", "down", "unknown")


def registry_for(report) -> CollectorRegistry:
    """A registry holding the metrics of a `pipeline.CheckReport`."""
    registry = CollectorRegistry()
    findings = Gauge(
        f"{PREFIX}_open_findings",
        "Open findings by kind and severity.",
        ["kind", "severity"],
        registry=registry,
    )
    for kind, (severity, _) in KINDS.items():
        findings.labels(kind=kind, severity=severity).set(report.findings.get(kind, 0))
    risk = Gauge(
        f"{PREFIX}_amount_at_risk",
        "Money paid without access given, in major units, by currency.",
        ["currency"],
        registry=registry,
    )
    for currency, minor in report.amount_at_risk.items():
        risk.labels(currency=currency).set(minor / minor_units_per_major(currency))
    up = Gauge(
        f"{PREFIX}_component_up", "1 when the component is up, else 0.", ["component"], registry=registry
    )
    state = Gauge(
        f"{PREFIX}_component_state",
        "1 for the component's current state.",
        ["component", "state"],
        registry=registry,
    )
    latency = Gauge(
        f"{PREFIX}_component_latency_seconds",
        "Latency of the component's last probe.",
        ["component"],
        registry=registry,
    )
    for c in report.components:
        up.labels(component=c.name).set(1 if c.status == "up" else 0)
        for s in STATES:
            state.labels(component=c.name, state=s).set(1 if c.status == s else 0)
        if c.latency_ms is not None:
            latency.labels(component=c.name).set(c.latency_ms / 1000)
    verdict = Gauge(
        f"{PREFIX}_check_status",
        "The check's Nagios status: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        registry=registry,
    )
    verdict.set(report.exit_status)
    if report.last_sync_age_s is not None:
        age = Gauge(
            f"{PREFIX}_last_sync_age_seconds", "Seconds since the last successful sync.", registry=registry
        )
        age.set(report.last_sync_age_s)
    return registry


def write_textfile(path: str | Path, report) -> None:
    """Write the metrics atomically (a temporary file renamed into place), as the textfile collector needs."""
    write_to_textfile(str(path), registry_for(report))
