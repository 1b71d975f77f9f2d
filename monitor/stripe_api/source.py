"""Stripe: the only module that imports `stripe`. Owns the client, its timeouts and retries, and turns the
SDK's errors into the project's own (`monitor.errors`). Returns plain JSON dicts, never SDK objects.

Bulk lists go through `StripeClient.raw_request`, which parses each page's JSON once instead of building a
`StripeObject` per item (about 9x faster in a trial on this kind of machine).
"""

from __future__ import annotations

import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
import stripe

from monitor.errors import StripeAuthError, StripePermissionError, StripeRequestError, StripeUnavailable
from monitor.rules import completeness
from monitor.secrets import mask_value
from monitor.stripe_api.ratelimit import RateLimiter

# The API version every request asks for; objects are parsed for this shape (monitor/store/rows.py).
API_VERSION = "2026-10-28.endive"
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 30
# The SDK is told to retry nothing (max_network_retries=0): `StripeSource.get` retries, so that every attempt
# goes through the rate limiter. Connection errors and 5xx are retried this many times, with backoff.
MAX_NETWORK_RETRIES = 2
# 429 (rate limited) is retried this many times, after 0.5 s, 1 s, 2 s, … (with jitter).
RATE_LIMIT_RETRIES = 6
PAGE_SIZE = 100


@dataclass(frozen=True)
class Resource:
    """One Stripe list the sync pulls, by created-windows. `permission` is the resource a restricted key
    needs Read on, as the Dashboard names it."""

    name: str
    path: str
    kind: str
    permission: str
    params: dict = field(default_factory=dict)


RESOURCES: tuple[Resource, ...] = (
    Resource("customers", "/v1/customers", "customer", "Customers"),
    Resource("checkout_sessions", "/v1/checkout/sessions", "checkout.session", "Checkout Sessions"),
    # Invoice payments are an includable field since API 2025-03-31: ask for them in the same page.
    Resource("invoices", "/v1/invoices", "invoice", "Invoices", {"expand": ["data.payments"]}),
    Resource("payment_intents", "/v1/payment_intents", "payment_intent", "PaymentIntents"),
    Resource("charges", "/v1/charges", "charge", "Charges"),
    Resource("refunds", "/v1/refunds", "refund", "Refunds"),
    Resource("disputes", "/v1/disputes", "dispute", "Disputes"),
    # The subscriptions list leaves out canceled ones unless asked for all (Stripe API reference).
    Resource("subscriptions", "/v1/subscriptions", "subscription", "Subscriptions", {"status": "all"}),
    Resource("events", "/v1/events", "event", "Events"),
)
assert tuple(r.name for r in RESOURCES) == completeness.LISTS, "the snapshot's lists go by these names"
ENDPOINTS = Resource(completeness.ENDPOINTS, "/v1/webhook_endpoints", "webhook_endpoint", "Webhook Endpoints")
# Events not yet delivered to some endpoint (Stripe API reference, "List all events": delivery_success).
UNDELIVERED_EVENTS = Resource(
    "undelivered_events", "/v1/events", "event", "Events", {"delivery_success": False}
)
RETRIEVE_PATHS = {r.kind: r.path for r in (*RESOURCES, ENDPOINTS)}
# The permission a path needs, by the Dashboard's name, for a 403 whose message does not say.
_PERMISSION_OF_PATH = {r.path: r.permission for r in (*RESOURCES, ENDPOINTS)} | {"/v1/account": "Account"}
# Stripe's 403 for a restricted key names the permission by its internal name: "Having the
# 'rak_checkout_session_read' permission would allow this request to continue." (seen in stripe-node
# issue 2246 and others). Its resource part, as the Dashboard names it.
_RAK_NAMES = {
    "customer": "Customers",
    "checkout_session": "Checkout Sessions",
    "invoice": "Invoices",
    "payment_intent": "PaymentIntents",
    "charge": "Charges",
    "refund": "Refunds",
    "dispute": "Disputes",
    "subscription": "Subscriptions",
    "event": "Events",
    "webhook_endpoint": "Webhook Endpoints",
    "webhook": "Webhook Endpoints",
    "account": "Account",
}
_RAK = re.compile(r"'rak_([a-z_]+?)_(read|write)'")


@dataclass(frozen=True)
class AccountCheck:
    """One `GET /v1/account` as the Stripe probe sees it: what came back, never an exception."""

    http_status: int | None  # None when no HTTP answer came (refused, timeout, TLS, DNS)
    account: dict | None  # the account's JSON on a 2xx answer
    message: str  # Stripe's error message or the network error, one line; "" on success


class StripeSource:
    """A Stripe account (or the emulator) reached through the SDK, with bounded retries everywhere."""

    def __init__(
        self,
        api_key: str,
        api_base: str,
        *,
        max_network_retries: int = MAX_NETWORK_RETRIES,
        timeout: tuple[float, float] = (CONNECT_TIMEOUT_S, READ_TIMEOUT_S),
        sleep: Callable[[float], None] = time.sleep,
        limiter: RateLimiter | None = None,
    ):
        self.api_base = api_base.rstrip("/")
        self._key_shown = mask_value(api_key)
        self._http_client = stripe.RequestsClient(timeout=timeout)
        # The SDK retries nothing itself: every attempt, retries included, goes through `get` and so
        # through the rate limiter.
        self._client = stripe.StripeClient(
            api_key,
            base_addresses={"api": self.api_base},
            stripe_version=API_VERSION,
            max_network_retries=0,
            http_client=self._http_client,
        )
        self._network_retries = max_network_retries
        self._sleep = sleep
        self._limiter = limiter
        self._lock = threading.Lock()
        self.requests = 0
        self.rate_limited = 0

    def get(self, path: str, **params) -> dict:
        """GET `path` with `params` (Stripe's nested form: {"created": {"gte": 1}}); the parsed JSON.

        429 is retried up to RATE_LIMIT_RETRIES times, network errors and 5xx up to max_network_retries
        times, each after an exponential backoff with jitter."""
        network_failures = 0
        for attempt in range(RATE_LIMIT_RETRIES + self._network_retries + 1):
            if self._limiter is not None:
                self._limiter.acquire()
            with self._lock:
                self.requests += 1
            try:
                return self._request(path, params)
            except stripe.RateLimitError as e:
                with self._lock:
                    self.rate_limited += 1
                if attempt - network_failures >= RATE_LIMIT_RETRIES:
                    raise StripeUnavailable(
                        f"Stripe kept answering 429 (rate limited) for GET {path} after "
                        f"{RATE_LIMIT_RETRIES} retries: {_message(e)}",
                        http_status=429,
                        code="rate_limit",
                    ) from None
            except (stripe.APIConnectionError, stripe.APIError) as e:
                network_failures += 1
                if network_failures > self._network_retries:
                    raise self._translate(e, path) from None
            except stripe.StripeError as e:
                raise self._translate(e, path) from None
            self._sleep(min(30.0, 0.5 * 2**attempt) * (0.5 + random.random() / 2))
        raise StripeUnavailable(f"GET {path} failed after {attempt + 1} attempts")

    def _request(self, path: str, params: dict) -> dict:
        """One GET through the SDK's raw request path (its HTTP client, headers, API version and error
        classes), with a 2xx body parsed once, by orjson. `StripeClient.raw_request` is exactly
        `request_raw` + `_interpret_response`, and the latter parses the body with the json module on
        every answer: on bulk pages that parse was the sync's largest cost."""
        requestor = self._client._requestor
        body, status, headers = requestor.request_raw(
            "get", path, params=params, options={}, base_address="api", api_mode="V1", usage=["raw_request"]
        )
        if 200 <= status < 300:
            return orjson.loads(body)
        return requestor._interpret_response(body, status, headers, "V1").data  # raises the SDK's error

    def list_page(self, resource: Resource, *, created_gte: int, created_lt: int, starting_after: str | None):
        """One page (up to 100, newest first) of `resource` created in [created_gte, created_lt)."""
        params: dict = {
            "limit": PAGE_SIZE,
            "created": {"gte": created_gte, "lt": created_lt},
            **resource.params,
        }
        if starting_after:
            params["starting_after"] = starting_after
        return self.get(resource.path, **params)

    def list_all(self, resource: Resource) -> list[dict]:
        """Every object of a small resource (webhook endpoints), following pages."""
        objects: list[dict] = []
        starting_after = None
        while True:
            params: dict = {"limit": PAGE_SIZE, **resource.params}
            if starting_after:
                params["starting_after"] = starting_after
            page = self.get(resource.path, **params)
            objects += page.get("data") or []
            if not page.get("has_more") or not page.get("data"):
                return objects
            starting_after = page["data"][-1]["id"]

    def retrieve(self, kind: str, object_id: str) -> dict:
        """One object by id, as plain JSON. StripeRequestError (resource_missing) when it does not exist."""
        return self.get(f"{RETRIEVE_PATHS[kind]}/{object_id}")

    def account(self) -> dict:
        return self.get("/v1/account")

    def check_account(self) -> AccountCheck:
        """One `GET /v1/account` for the probe: exactly one request (no 429 back-off here; the SDK's own
        retries are whatever `max_network_retries` says, 0 for a probe), classified, never raised."""
        with self._lock:
            self.requests += 1
        try:
            return AccountCheck(200, self._client.raw_request("get", "/v1/account").data, "")
        except stripe.APIConnectionError as e:
            return AccountCheck(None, None, _network_message(e))
        except stripe.StripeError as e:
            return AccountCheck(e.http_status, None, _message(e))

    def close(self) -> None:
        """Close this thread's HTTP session (its pooled connections)."""
        self._http_client.close()

    def _translate(self, e: stripe.StripeError, path: str) -> Exception:
        """The project's error for the SDK's, with Stripe's HTTP status and error `code` (`resource_missing`,
        …) as Stripe answered them, so callers read those, never the message."""
        status = e.http_status
        code = e.code
        if isinstance(e, stripe.PermissionError):
            permission = permission_needed(path, _message(e))
            return StripePermissionError(
                f'the API key {self._key_shown} lacks the permission "{permission}" for GET {path} '
                f"(Stripe answered 403: {_message(e)})",
                permission=permission,
                http_status=status,
                code=code,
            )
        if isinstance(e, stripe.AuthenticationError):
            return StripeAuthError(
                f"Stripe rejected the API key {self._key_shown} (401): {_message(e)}",
                http_status=status,
                code=code,
            )
        if isinstance(e, stripe.APIConnectionError):
            return StripeUnavailable(  # no answer came: no status, no code
                f"cannot reach Stripe at {self.api_base}: {_message(e)}", http_status=status, code=code
            )
        if isinstance(e, stripe.InvalidRequestError):
            return StripeRequestError(
                f"Stripe refused GET {path} ({status}): {_message(e)}", http_status=status, code=code
            )
        return StripeUnavailable(
            f"Stripe failed on GET {path} ({status or 'no status'}): {_message(e)}",
            http_status=status,
            code=code,
        )


def permission_needed(path: str, message: str) -> str:
    """The permission a 403 says is missing, in the Dashboard's words ("Checkout Sessions: read"): from the
    `rak_…` name Stripe's message gives, else from the path asked for."""
    found = _RAK.search(message)
    if found:
        name, access = found.groups()
        return f"{_RAK_NAMES.get(name, name.replace('_', ' '))}: {access}"
    base = (
        "/".join(path.split("/")[:4]) if path.startswith("/v1/checkout/") else "/".join(path.split("/")[:3])
    )
    return f"{_PERMISSION_OF_PATH.get(base, base)}: read"


def _network_message(e: stripe.APIConnectionError) -> str:
    """The network error inside the SDK's wrapper text ("Unexpected error communicating with Stripe. …
    (Network error: ReadTimeout: …)"), on one line."""
    text = " ".join(str(e.user_message or e).split())
    marker = "(Network error: "
    if marker in text and text.endswith(")"):
        return text[text.index(marker) + len(marker) : -1]
    return text


def _message(e: stripe.StripeError) -> str:
    text = e.user_message or str(e) or e.__class__.__name__
    return " ".join(str(text).split())
