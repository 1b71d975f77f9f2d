"""The one verdict `monitor check` gives, and the Overview's status line repeats: the worst of the
components' states and the open findings' severities. Pure."""

from __future__ import annotations

from monitor.rules.findings import severity_of


def verdict(components: list, findings: dict[str, int], *, store_read: bool) -> str:
    """CRITICAL: a component down or a critical finding open; WARNING: a component degraded or unknown,
    or a warning finding open; UNKNOWN: the store could not be read (nothing else down); else OK.
    `components` are anything with a `status` (probes.ProbeResult)."""
    statuses = {c.status for c in components}
    severities = {severity_of(kind) for kind, n in findings.items() if n}
    if "down" in statuses or "critical" in severities:
        return "CRITICAL"
    if not store_read:
        return "UNKNOWN"
    if statuses & {"degraded", "unknown"} or "warning" in severities:
        return "WARNING"
    return "OK"
