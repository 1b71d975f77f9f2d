"""The emulated Stripe API: `Emulator.handle` turns one request into one response without touching a
socket (monitor.emulator.server serves it over HTTP). Objects live in `state.Store`, which also keeps
Stripe's order (same-second objects in creation order) and serves includable fields only when expanded;
monitor.emulator.protocol reads the request. Faults (latency, a rate limit, random 500s) are injected here.

`deny` names paths the key may not read, as a restricted key without that permission: GET on the list and
on each object under it answers Stripe's 403, naming the permission (`READ_PERMISSIONS`) that is missing.
"""

import hmac
import json
import random
import re
import secrets
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from monitor.emulator.protocol import (
    READ_PERMISSIONS,
    Route,
    allowed_list_params,
    check_known,
    mask_key,
    objects_of,
    parse_created,
    parse_expand,
    parse_filters,
    parse_limit,
    parse_query,
    permission_error,
    presented_key,
    route,
    string_param,
)
from monitor.emulator.state import ApiError, Bounds, Record, Store

TEST_KEY = re.compile(r"^(sk|rk)_test_")
NO_KEY_MESSAGE = (
    "You did not provide an API key. You need to provide your API key in the Authorization header, "
    "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). "
    "See https://stripe.com/docs/api#authentication for details."
)
RATE_LIMIT_MESSAGE = (
    "Request rate limit exceeded. You can learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)

# ---------------------------------------------------------------------------------------------------------
# Requests and responses


@dataclass(frozen=True)
class Response:
    """A status, a JSON body (already encoded) and extra headers."""

    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


def json_response(status: int, payload: object) -> Response:
    return Response(status, json.dumps(payload, separators=(",", ":")).encode())


def stamped(response: Response) -> Response:
    """`response` with a fresh Stripe-style `Request-Id: req_…` header (every answer carries one)."""
    response.headers["Request-Id"] = "req_" + secrets.token_hex(7)
    return response


# ---------------------------------------------------------------------------------------------------------
# Faults


class TokenBucket:
    """A rate limit across all clients: `rate` requests/s with bursts of up to one second's worth."""

    def __init__(self, rate: float):
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._tokens = self.capacity
        self._last = time.monotonic()
        self._lock = threading.Lock()

    def take(self) -> bool:
        """Spend one token if there is one; never waits."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._last) * self.rate)
            self._last = now
            if self._tokens >= 1:
                self._tokens -= 1
                return True
            return False


# ---------------------------------------------------------------------------------------------------------
# The emulator


class Emulator:
    """The emulator's state and request handling: objects, options, counters.

    Faults (latency, rate limit, random 500s) apply to the Stripe routes only, never to /_emulator/,
    so tests and benchmarks can always load objects and read counters. The counters count every
    request to a non-admin path, including refused ones.

    `forbidden_keys` are accepted as keys but may read nothing: every Stripe route answers them 403
    with Stripe's permission error, as Stripe does for a restricted key without the permission.

    `deny` lists paths of `READ_PERMISSIONS` (`/v1/checkout/sessions`) that every key is refused: their list
    and their objects answer 403 naming the `rak_…_read` permission missing; other paths answer as usual.
    """

    def __init__(
        self,
        objects: Iterable[dict] = (),
        *,
        api_key: str | None = None,
        latency_ms: float = 0,
        rate_limit: float | None = None,
        error_rate: float = 0.0,
        seed: int = 0,
        forbidden_keys: Iterable[str] = (),
        deny: Iterable[str] = (),
    ):
        if latency_ms < 0:
            raise ValueError(f"latency_ms must be >= 0, not {latency_ms}")
        if rate_limit is not None and rate_limit <= 0:
            raise ValueError(f"rate_limit must be > 0 requests/s, not {rate_limit}")
        if not 0.0 <= error_rate <= 1.0:
            raise ValueError(f"error_rate must be between 0 and 1, not {error_rate}")
        self.deny = frozenset(deny)
        unknown = sorted(self.deny - READ_PERMISSIONS.keys())
        if unknown:
            raise ValueError(
                f"deny: {unknown[0]} is not a path the emulator serves; one of {', '.join(READ_PERMISSIONS)}"
            )
        self.api_key = api_key
        self.forbidden_keys = frozenset(forbidden_keys)
        self.latency_ms = latency_ms
        self.rate_limit = rate_limit
        self.error_rate = error_rate
        self.store = Store(objects)
        self._bucket = TokenBucket(rate_limit) if rate_limit is not None else None
        self._random = random.Random(seed)
        self._random_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self._stats = _empty_stats()

    @property
    def object_count(self) -> int:
        """How many objects are stored (of every type, routed or not)."""
        return len(self.store)

    def upsert(self, objects: Iterable[dict]) -> int:
        """Insert or replace objects by id; ValueError (nothing stored) if one is not a Stripe object."""
        return self.store.upsert(objects)

    def stats(self) -> dict:
        """`{"requests", "by_path", "rate_limited", "errors_injected"}` since start or the last reset."""
        with self._stats_lock:
            return {**self._stats, "by_path": dict(self._stats["by_path"])}

    def reset_stats(self) -> None:
        with self._stats_lock:
            self._stats = _empty_stats()

    def _count(self, key: str, path: str | None = None) -> None:
        with self._stats_lock:
            self._stats[key] += 1
            if path is not None:
                self._stats["by_path"][path] = self._stats["by_path"].get(path, 0) + 1

    def handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes = b"") -> Response:
        """Answer one HTTP request (`target` is the path with its query string). Never raises."""
        try:
            response = self._handle(method, target, headers, body)
        except ApiError as error:
            response = json_response(error.status, error.body())
        except Exception as error:  # noqa: BLE001 - a bug here must look like Stripe's 500, not kill the thread
            response = json_response(
                500, {"error": {"type": "api_error", "message": f"Emulator bug: {error!r}"}}
            )
        return stamped(response)

    def _handle(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Response:
        url = urlsplit(target)
        found = route(method, url.path)
        admin = found is not None and found.kind in ("upsert", "stats", "reset")
        if not admin:
            self._count("requests", found.pattern if found else url.path)
            if self.latency_ms:
                time.sleep(self.latency_ms / 1000)  # each connection has its own thread: others go on
        key = self._authenticate(headers.get("Authorization"))
        if found is None:
            raise ApiError(
                404,
                f"Unrecognized request URL ({method}: {url.path}). Please see https://stripe.com/docs "
                "or we can help at https://support.stripe.com/.",
            )
        if admin:
            return self._admin(found.kind, body)
        if key in self.forbidden_keys:
            raise permission_error(key, self.store.account().id)
        if found.resource in self.deny:
            raise permission_error(key, self.store.account().id, READ_PERMISSIONS[found.resource])
        if self._bucket is not None and not self._bucket.take():
            self._count("rate_limited")
            raise ApiError(429, RATE_LIMIT_MESSAGE, code="rate_limit")
        if self.error_rate and self._draw() < self.error_rate:
            self._count("errors_injected")
            raise ApiError(
                500,
                f"An unknown error occurred (injected by the Stripe emulator, error_rate={self.error_rate}).",
                type_="api_error",
            )
        return self._api(found, parse_query(url.query))

    def _draw(self) -> float:
        with self._random_lock:  # one seeded sequence shared by all threads: repeatable runs
            return self._random.random()

    def _authenticate(self, authorization: str | None) -> str:
        """The presented key if it is accepted; ApiError 401 otherwise."""
        key = presented_key(authorization)
        if key is None:
            raise ApiError(401, NO_KEY_MESSAGE)
        if key in self.forbidden_keys:
            return key
        if self.api_key is not None:
            accepted = hmac.compare_digest(key.encode(), self.api_key.encode())
        else:
            accepted = TEST_KEY.match(key) is not None
        if not accepted:
            raise ApiError(401, f"Invalid API Key provided: {mask_key(key)}")
        return key

    def _admin(self, kind: str, body: bytes) -> Response:
        if kind == "stats":
            return json_response(200, self.stats())
        if kind == "reset":
            self.reset_stats()
            return json_response(200, self.stats())
        try:
            payload = json.loads(body or b"null")
            objects = objects_of(payload)
            return json_response(200, {"upserted": self.upsert(objects)})
        except ValueError as error:  # JSONDecodeError is a ValueError too
            raise ApiError(400, f"Invalid objects: {error}") from None

    def _api(self, found: Route, params: dict) -> Response:
        if found.kind == "list":
            return self._list(found, params)
        check_known(params, {"expand"})
        expand = parse_expand(params, on_list=False)
        if found.kind == "account":
            record = self.store.account()
        else:
            record = self.store.retrieve(found.object_type, found.object_id)
        return Response(200, self.store.expanded(record, expand))

    def _list(self, found: Route, params: dict) -> Response:
        object_type = found.object_type
        check_known(params, allowed_list_params(object_type))
        limit = parse_limit(params)
        if "starting_after" in params and "ending_before" in params:
            raise ApiError(
                400,
                "You may only specify one of these parameters: ending_before, starting_after.",
                param="ending_before",
            )
        cursors = {}
        for name in ("starting_after", "ending_before"):
            if name in params:
                cursors[name] = self.store.cursor(object_type, string_param(params, name), name)
        gte, lte = parse_created(params)
        filters = parse_filters(object_type, params)
        expand = parse_expand(params, on_list=True)
        bounds = Bounds(gte, lte, cursors.get("starting_after"), cursors.get("ending_before"))
        records, has_more = self.store.page(object_type, filters, bounds, limit)
        return Response(200, list_body(records, has_more, found.pattern, self.store, expand))


def list_body(
    records: list[Record], has_more: bool, url: str, store: Store, expand: list[list[str]]
) -> bytes:
    """Stripe's list envelope around already-encoded objects (no re-encoding unless expanding).

    Built with a single join: a page of 100 objects is ~300 KB, and every extra concatenation copies it.
    """
    chunks = [b'{"object":"list","data":[']
    for position, record in enumerate(records):
        if position:
            chunks.append(b",")
        chunks.append(store.expanded(record, expand))
    more = b"true" if has_more else b"false"
    chunks.append(b'],"has_more":' + more + b',"url":' + json.dumps(url).encode() + b"}")
    return b"".join(chunks)


def _empty_stats() -> dict:
    return {"requests": 0, "by_path": {}, "rate_limited": 0, "errors_injected": 0}
