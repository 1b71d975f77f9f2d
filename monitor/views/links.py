"""Links to objects in Stripe's dashboard."""

from __future__ import annotations

import re
from urllib.parse import quote

DASHBOARD = "https://dashboard.stripe.com"
# id prefix -> the dashboard's path for that kind of object
PATHS = {
    "cs": "checkout/sessions",
    "pi": "payments",
    "ch": "payments",
    "py": "payments",
    "in": "invoices",
    "cus": "customers",
    "sub": "subscriptions",
    "evt": "events",
    "we": "webhooks",
    "re": "refunds",
    "dp": "disputes",
    "du": "disputes",
}
_ID = re.compile(r"([a-z]+)_[A-Za-z0-9_]+")


def stripe_dashboard_url(object_id: str, livemode: bool | None) -> str:
    """The object's page in Stripe's dashboard: under /test unless `livemode` is True (the demo's None is
    test mode). An id of an unknown kind gets the dashboard's search for it."""
    base = DASHBOARD if livemode else f"{DASHBOARD}/test"
    text = str(object_id or "").strip()
    m = _ID.fullmatch(text)
    if m and m.group(1) in PATHS:
        return f"{base}/{PATHS[m.group(1)]}/{text}"
    return f"{base}/search?query={quote(text, safe='')}"
