"""The demo's probe history: two days of probes before the scenario's anchor, with the Redis outage of the
incident (DESIGN.md "The incident": the manual fallback failed because Redis was down)."""

from __future__ import annotations

from datetime import datetime, timedelta

from monitor.emulator.demo import REDIS_ERROR, Demo

COMPONENTS = ("redis:channels", "monitor_db", "app_db", "stripe_api", "webhook_endpoint")
_UP_DETAIL = {
    "redis:channels": "PONG",
    "monitor_db": "SELECT 1 answered",
    "app_db": "SELECT 1 answered",
    "stripe_api": "key accepted (test mode), account acct_emulator",
    "webhook_endpoint": "route alive: answered 400 to an unsigned request",
}


def incident_time(demo: Demo) -> datetime:
    """When the incident's customer paid (the Checkout Session's creation)."""
    session_id = demo.cases["incident"]["checkout_session_id"]
    created = next(o["created"] for o in demo.objects if o.get("id") == session_id)
    return datetime.fromtimestamp(created, demo.anchor.tzinfo)


def demo_probe_history(demo: Demo) -> list[dict]:
    """Probe results (component, status, detail, latency_ms, checked_at) every 10 minutes over the two
    days before the anchor, every 2 minutes in the last six hours; redis:channels refuses connections from
    2 minutes before the incident's payment to 22 minutes after it."""
    paid_at = incident_time(demo)
    outage = (paid_at - timedelta(minutes=2), paid_at + timedelta(minutes=22))
    start = demo.anchor - timedelta(days=2)
    times, t = [], start
    while t < demo.anchor:
        times.append(t)
        t += timedelta(minutes=2 if demo.anchor - t <= timedelta(hours=6) else 10)
    rows = []
    for at in times:
        for i, component in enumerate(COMPONENTS):
            down = component == "redis:channels" and outage[0] <= at < outage[1]
            rows.append(
                {
                    "component": component,
                    "status": "down" if down else "up",
                    "detail": REDIS_ERROR if down else _UP_DETAIL[component],
                    "latency_ms": None if down else round(0.4 + 0.3 * i + (at.minute % 7) / 10, 2),
                    "checked_at": at,
                }
            )
    return rows
