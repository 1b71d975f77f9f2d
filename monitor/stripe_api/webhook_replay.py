"""Re-sending a Stripe event to the app's webhook endpoint, signed the way Stripe signs.

Stripe's scheme (docs.stripe.com/webhooks#verify-manually): the header `Stripe-Signature: t=TIMESTAMP,
v1=SIGNATURE`, where SIGNATURE is the hex HMAC-SHA256 of `TIMESTAMP.BODY` keyed with the endpoint's signing
secret (`whsec_…`), over the exact bytes sent.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import requests

from monitor.secrets import mask_url

TIMEOUT = (3, 10)


def signature_header(body: bytes, secret: str, timestamp: int | None = None) -> str:
    timestamp = int(time.time()) if timestamp is None else timestamp
    signed = f"{timestamp}.".encode() + body
    digest = hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def send_event(url: str, secret: str, event: dict) -> tuple[int | None, str]:
    """POST `event` to `url` signed with `secret`; (HTTP status or None, a short description)."""
    body = json.dumps(event, separators=(",", ":")).encode()
    headers = {
        "Content-Type": "application/json; charset=utf-8",
        "Stripe-Signature": signature_header(body, secret),
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks) payment-parity-monitor replay",
    }
    try:
        with requests.Session() as session:
            response = session.post(url, data=body, headers=headers, timeout=TIMEOUT, allow_redirects=False)
    except requests.RequestException as e:
        return None, f"cannot deliver to {mask_url(url)}: {e.__class__.__name__}: {e}"
    text = " ".join(response.text.split())[:200]
    return response.status_code, f"{mask_url(url)} answered {response.status_code}" + (
        f": {text}" if text else ""
    )
