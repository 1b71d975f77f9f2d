"""A small app that receives Stripe webhooks as the incident's app should have: it verifies the signature
with the `stripe` SDK's own `Webhook.construct_event` and, for checkout.session.completed, inserts the
active subscription row into the app's database (the default schema). Used by the repair tests."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import stripe
from sqlalchemy import Connection, create_engine, text

INSERT_ACTIVE_ROW = text(
    "INSERT INTO subscriptions (customer_email, stripe_customer_id, stripe_checkout_session_id, "
    "stripe_payment_intent_id, plan, amount, currency, status, created_at, activated_at) "
    "VALUES (:email, :customer, :session, :intent, 'annual', :amount, :currency, 'active', :now, :now)"
)


def insert_active_row(conn: Connection, session: dict) -> None:
    """What the app's own fulfilment does for a paid Checkout Session: one INSERT of an active row, in the
    caller's transaction, with no lock of any kind (the app knows nothing of the monitor's)."""
    now = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    conn.execute(
        INSERT_ACTIVE_ROW,
        {
            "email": (session.get("customer_details") or {}).get("email") or session.get("customer_email"),
            "customer": session.get("customer"),
            "session": session["id"],
            "intent": session.get("payment_intent"),
            "amount": session.get("amount_total"),
            "currency": session.get("currency"),
            "now": now.strftime("%Y-%m-%d %H:%M:%S") if conn.dialect.name == "sqlite" else now,
        },
    )


@dataclass
class Delivery:
    status: int
    event_type: str | None
    signature: str | None


@dataclass
class WebhookReceiver:
    """`with WebhookReceiver(app_url, secret) as hook:` serves POST /hook on 127.0.0.1 at `hook.url`;
    `hook.deliveries` lists every request it answered."""

    app_url: str
    secret: str
    deliveries: list[Delivery] = field(default_factory=list)

    def __enter__(self) -> WebhookReceiver:
        receiver = self
        self._engine = create_engine(self.app_url)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                signature = self.headers.get("Stripe-Signature")
                status, event_type = receiver._handle(self.path, body, signature)
                receiver.deliveries.append(Delivery(status, event_type, signature))
                answer = json.dumps({"received": status == 200}).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05})
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/hook"

    def _handle(self, path: str, body: bytes, signature: str | None) -> tuple[int, str | None]:
        if path != "/hook":
            return 404, None
        try:
            event = stripe.Webhook.construct_event(body, signature or "", self.secret)
        except (stripe.SignatureVerificationError, ValueError):
            return 400, None
        if event.type == "checkout.session.completed":
            session = json.loads(body)["data"]["object"]
            with self._engine.begin() as conn:
                insert_active_row(conn, session)
        return 200, event.type

    def __exit__(self, *exc_info) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
        self._engine.dispose()
