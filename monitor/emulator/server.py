"""The Stripe emulator's HTTP side: Stripe's URLs, parameters, keys, errors and injected faults.

`Emulator.handle` turns one request into one response without touching a socket; `start` and
`serve_forever` put it behind a `ThreadingHTTPServer` that the real `stripe` SDK can talk to
(`StripeClient(key, base_addresses={"api": base_url})`). Objects live in `state.Store`, which also keeps
Stripe's order (same-second objects in creation order) and serves includable fields only when expanded.

`deny` names paths the key may not read, as a restricted key without that permission: GET on the list and
on each object under it answers Stripe's 403, naming the permission (`READ_PERMISSIONS`) that is missing.
"""

import base64
import binascii
import contextlib
import hmac
import json
import random
import re
import secrets
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from monitor.emulator.state import (
    FILTERS,
    LIST_RESOURCES,
    ApiError,
    Bounds,
    Filter,
    Record,
    Store,
    check_object,
)

MAX_LIMIT = 100
DEFAULT_LIMIT = 10
# Statuses the subscriptions list leaves out unless asked for by `status` (Stripe's documented default).
HIDDEN_SUBSCRIPTION_STATUSES = frozenset({"canceled", "incomplete_expired"})
TEST_KEY = re.compile(r"^(sk|rk)_test_")
LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before", "created", "expand"})
CREATED_OPS = frozenset({"gt", "gte", "lt", "lte"})
NO_KEY_MESSAGE = (
    "You did not provide an API key. You need to provide your API key in the Authorization header, "
    "using Bearer auth (e.g. 'Authorization: Bearer YOUR_SECRET_KEY'). "
    "See https://stripe.com/docs/api#authentication for details."
)
RATE_LIMIT_MESSAGE = (
    "Request rate limit exceeded. You can learn more about rate limits here "
    "https://stripe.com/docs/rate-limits."
)
# The permission a restricted key needs to read each served path, by the internal name Stripe's 403 gives
# it: "Having the 'rak_charge_read' permission would allow this request to continue." (the form quoted in
# monitor/stripe_api/source.py, which reads it back).
READ_PERMISSIONS: dict[str, str] = {
    "/v1/checkout/sessions": "rak_checkout_session_read",
    "/v1/customers": "rak_customer_read",
    "/v1/invoices": "rak_invoice_read",
    "/v1/payment_intents": "rak_payment_intent_read",
    "/v1/charges": "rak_charge_read",
    "/v1/refunds": "rak_refund_read",
    "/v1/disputes": "rak_dispute_read",
    "/v1/subscriptions": "rak_subscription_read",
    "/v1/events": "rak_event_read",
    "/v1/webhook_endpoints": "rak_webhook_endpoint_read",
    "/v1/account": "rak_account_read",
}


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


@dataclass(frozen=True)
class Route:
    """What a path names: `kind` is list, retrieve, account or an admin action; `pattern` keys the stats;
    `resource` is the path of the list (or the account) a Stripe route reads, as `READ_PERMISSIONS` keys it."""

    kind: str
    pattern: str
    object_type: str | None = None
    object_id: str | None = None
    resource: str | None = None


ADMIN_ROUTES = {
    ("POST", "/_emulator/objects"): "upsert",
    ("GET", "/_emulator/stats"): "stats",
    ("POST", "/_emulator/stats/reset"): "reset",
}


def route(method: str, path: str) -> Route | None:
    """The route of a GET under /v1/ or an admin call; None for anything Stripe would not recognize."""
    if (method, path) in ADMIN_ROUTES:
        return Route(ADMIN_ROUTES[method, path], path)
    if method != "GET" or not path.startswith("/v1/"):
        return None
    rest = path[len("/v1/") :]
    if rest == "account":
        return Route("account", path, "account", resource=path)
    for resource, object_type in LIST_RESOURCES.items():
        if rest == resource:
            return Route("list", path, object_type, resource=path)
        if rest.startswith(resource + "/"):
            object_id = unquote(rest[len(resource) + 1 :])
            if object_id and "/" not in object_id:
                pattern = f"/v1/{resource}/{{id}}"
                return Route("retrieve", pattern, object_type, object_id, resource=f"/v1/{resource}")
    return None


_PARAM_NAME = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_SUBSCRIPT = re.compile(r"\[([^\[\]]*)\]")


def parse_query(query: str) -> dict[str, str | list[str] | dict[str, str]]:
    """Stripe's bracket form-encoding: `a=1`, `a[]=x`/`a[0]=x` (lists, in order), `a[k]=v` (dicts)."""
    params: dict[str, str | list[str] | dict[str, str]] = {}
    for name, value in parse_qsl(query, keep_blank_values=True):
        match = _PARAM_NAME.match(name)
        if match is None:
            raise ApiError(400, f"Invalid parameter name: {name}", param=name)
        base, subscripts = match.group(1), _SUBSCRIPT.findall(match.group(2))
        current = params.get(base)
        if not subscripts:
            wanted: type = str
        elif len(subscripts) > 1:
            raise ApiError(400, f"Received unknown parameter: {name}", param=name)
        elif subscripts[0] == "" or subscripts[0].isdigit():
            wanted = list
        else:
            wanted = dict
        if current is not None and not isinstance(current, wanted):
            raise ApiError(400, f"Invalid {base}: mixes a value with indexed or keyed values", param=base)
        if wanted is str:
            params[base] = value
        elif wanted is list:
            params.setdefault(base, []).append(value)  # type: ignore[union-attr]
        else:
            params.setdefault(base, {})[subscripts[0]] = value  # type: ignore[index]
    return params


def _string(params: Mapping, name: str) -> str:
    value = params[name]
    if not isinstance(value, str):
        raise ApiError(400, f"Invalid string: {name} must be a single value", param=name)
    return value


def _strings(params: Mapping, name: str) -> list[str]:
    value = params[name]
    if isinstance(value, str):  # `expand=x` is lenient shorthand for `expand[]=x`
        return [value]
    if isinstance(value, list):
        return value
    raise ApiError(400, f"Invalid array: {name}", param=name)


def _integer(text: str, param: str) -> int:
    if not re.fullmatch(r"-?\d+", text):
        raise ApiError(400, f"Invalid integer: {text}", param=param)
    return int(text)


def _boolean(text: str, param: str) -> bool:
    if text not in ("true", "false"):
        raise ApiError(400, f"Invalid boolean: {text}", param=param)
    return text == "true"


def parse_limit(params: Mapping) -> int:
    """`limit` as an int in 1..100 (default 10); ApiError 400 with param "limit" otherwise."""
    if "limit" not in params:
        return DEFAULT_LIMIT
    limit = _integer(_string(params, "limit"), "limit")
    if limit < 1:
        raise ApiError(400, "This value must be greater than or equal to 1.", param="limit")
    if limit > MAX_LIMIT:
        raise ApiError(400, f"This value must be less than or equal to {MAX_LIMIT}.", param="limit")
    return limit


def parse_created(params: Mapping) -> tuple[int | None, int | None]:
    """`created=T` or `created[gt|gte|lt|lte]=T` as an inclusive (gte, lte) range of integer times."""
    if "created" not in params:
        return None, None
    value = params["created"]
    if isinstance(value, str):
        exact = _integer(value, "created")
        return exact, exact
    if not isinstance(value, dict):
        raise ApiError(400, "Invalid created: pass an integer or created[gt|gte|lt|lte]", param="created")
    gte = lte = None
    for op, text in value.items():
        if op not in CREATED_OPS:
            raise ApiError(400, f"Received unknown parameter: created[{op}]", param=f"created[{op}]")
        bound = _integer(text, f"created[{op}]")
        if op in ("gt", "gte"):
            low = bound + 1 if op == "gt" else bound
            gte = low if gte is None else max(gte, low)
        else:
            high = bound - 1 if op == "lt" else bound
            lte = high if lte is None else min(lte, high)
    return gte, lte


def parse_expand(params: Mapping, *, on_list: bool) -> list[list[str]]:
    """`expand` paths split on dots; on a list each must start with `data.`, which is dropped."""
    if "expand" not in params:
        return []
    paths = []
    for path in _strings(params, "expand"):
        parts = path.split(".")
        if on_list:
            if parts[0] != "data" or len(parts) < 2:
                raise ApiError(
                    400,
                    f"This property cannot be expanded ({path}). "
                    f"You may want to try expanding 'data.{path}' instead.",
                    param="expand",
                )
            parts = parts[1:]
        if not all(parts):
            raise ApiError(400, f"Invalid expand path: {path}", param="expand")
        paths.append(parts)
    return paths


def _type_filter(patterns: list[str]) -> Filter:
    """Event types, exact or with Stripe's trailing `*` wildcard (`checkout.session.*`)."""
    exact = frozenset(p for p in patterns if not p.endswith("*"))
    prefixes = tuple(p[:-1] for p in patterns if p.endswith("*"))
    return Filter("type", exact, prefixes)


def parse_filters(object_type: str, params: Mapping) -> list[Filter]:
    """The filters of a list request, with Stripe's defaults (subscriptions hide canceled ones)."""
    filters = []
    for name in FILTERS[object_type]:
        if name not in params:
            continue
        value = _string(params, name)
        if name == "delivery_success":
            filters.append(Filter(name, frozenset({_boolean(value, name)})))
        elif name == "type":
            filters.append(_type_filter([value]))
        elif not (object_type == "subscription" and name == "status" and value == "all"):
            filters.append(Filter(name, frozenset({value})))
    if object_type == "event" and "types" in params:
        if "type" in params:
            raise ApiError(400, "You may only specify one of these parameters: type, types.", param="types")
        filters.append(_type_filter(_strings(params, "types")))
    if object_type == "subscription" and "status" not in params:
        filters.append(Filter("status", HIDDEN_SUBSCRIPTION_STATUSES, exclude=True))
    return filters


def check_known(params: Mapping, allowed: Iterable[str]) -> None:
    """Refuse parameters this endpoint does not know, as Stripe does, so a typo is not silently ignored."""
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ApiError(400, f"Received unknown parameter: {unknown[0]}", param=unknown[0])


def allowed_list_params(object_type: str) -> set[str]:
    extra = {"types"} if object_type == "event" else set()
    return set(LIST_PARAMS) | set(FILTERS[object_type]) | extra


# ---------------------------------------------------------------------------------------------------------
# Keys


def mask_key(key: str) -> str:
    """A key as Stripe echoes it in errors: the `sk_test_` style prefix, `****`, and at most the last 4."""
    prefix_match = re.match(r"^[a-z]{2,4}_(test|live)_", key)
    prefix = prefix_match.group(0) if prefix_match else ""
    rest = key[len(prefix) :]
    tail = rest[-4:] if len(rest) > 8 else ""  # a short key would be given away by its last 4
    return f"{prefix}****{tail}"


def presented_key(authorization: str | None) -> str | None:
    """The key in `Authorization: Bearer KEY` or HTTP Basic (key as username); None if none was sent."""
    if not authorization:
        return None
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() == "bearer":
        return credentials or None
    if scheme.lower() == "basic":
        try:
            decoded = base64.b64decode(credentials, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            return ""
        return decoded.partition(":")[0] or None
    return ""


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
        except Exception as error:  # a bug here must still look like Stripe's 500, not kill the thread
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
            objects = _objects_of(payload)
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
                cursors[name] = self.store.cursor(object_type, _string(params, name), name)
        gte, lte = parse_created(params)
        filters = parse_filters(object_type, params)
        expand = parse_expand(params, on_list=True)
        bounds = Bounds(gte, lte, cursors.get("starting_after"), cursors.get("ending_before"))
        records, has_more = self.store.page(object_type, filters, bounds, limit)
        return Response(200, list_body(records, has_more, found.pattern, self.store, expand))


def permission_error(key: str, account_id: str, permission: str | None = None) -> ApiError:
    """Stripe's 403 for a key that may not use an endpoint, naming the missing permission when given."""
    message = (
        f"The provided key '{mask_key(key)}' does not have the required permissions for this endpoint "
        f"on account '{account_id}'."
    )
    if permission is not None:
        message += f" Having the '{permission}' permission would allow this request to continue."
    return ApiError(403, message)


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


def _objects_of(payload: object) -> list:
    if not isinstance(payload, dict) or not isinstance(payload.get("objects"), list):
        raise ValueError('expected a JSON object {"objects": [...]}')
    return payload["objects"]


def load_fixtures(path: str | Path) -> list[dict]:
    """The objects of a fixtures file `{"objects": [...]}`; ValueError with a one-line reason otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"fixtures file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read fixtures file {path}: {error}") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"fixtures file {path} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    try:
        objects = _objects_of(payload)
        for position, obj in enumerate(objects):
            check_object(obj, position)
    except ValueError as error:
        raise ValueError(f"fixtures file {path}: {error}") from None
    return objects


# ---------------------------------------------------------------------------------------------------------
# HTTP


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, asks the emulator, writes its answer."""

    protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses its connections
    disable_nagle_algorithm = True  # answer small responses at once, not after the client's delayed ACK
    server_version = "StripeEmulator"
    timeout = 60  # close idle keep-alive connections eventually
    server: "_Server"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        """Silent: http.server would print a line per request to stderr."""

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            error = ApiError(400, "Invalid Content-Length header")
            response = stamped(json_response(error.status, error.body()))
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            response = self.server.emulator.handle(self.command, self.path, self.headers, body)
        self._write(response)

    def _write(self, response: Response) -> None:
        status = HTTPStatus(response.status)
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(response.body)}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            *(f"{name}: {value}" for name, value in response.headers.items()),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        # Two writes, not `head + body`: that would copy a 300 KB page; Nagle is off, so no stall between.
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that can also drop its open keep-alive connections when stopped."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator):
        super().__init__(address, _Handler)
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on every client, so a stopped emulator stops answering on pooled connections too."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:
        """Clients hanging up mid-answer are normal; only report real failures."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class RunningEmulator:
    """An emulator served from a daemon thread; `stop()` (or leaving the `with` block) ends it."""

    def __init__(self, server: _Server, thread: threading.Thread):
        self._server = server
        self._thread = thread
        self._stopped = False
        host, port = server.server_address[:2]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"  # reachable from this machine whatever it listens on
        self.port: int = port
        self.base_url = f"http://{host}:{port}"
        self.emulator: Emulator = server.emulator

    def stop(self) -> None:
        """Stop listening and close open connections; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)

    def __enter__(self) -> "RunningEmulator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start(
    objects: Iterable[dict] = (), *, host: str = "127.0.0.1", port: int = 0, **options
) -> RunningEmulator:
    """Serve an `Emulator(objects, **options)` in a daemon thread; port 0 picks a free port."""
    server = _Server((host, port), Emulator(objects, **options))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="stripe-emulator", daemon=True
    )
    thread.start()
    return RunningEmulator(server, thread)


def serve_forever(objects: Iterable[dict], *, host: str = "127.0.0.1", port: int = 12111, **options) -> None:
    """Serve in the foreground until SIGINT or SIGTERM, then stop cleanly (no traceback).

    Prints one line, `Stripe emulator listening on http://HOST:PORT (N objects)`, once it accepts
    connections. OSError if the port cannot be bound; ValueError for a bad object or option.
    """
    stop = threading.Event()
    previous = {}
    try:  # before announcing the address: a signal sent right after the line must find our handlers
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    except ValueError:  # not the main thread: no handlers, Ctrl-C arrives as KeyboardInterrupt
        pass
    try:
        running = start(objects, host=host, port=port, **options)
    except BaseException:
        _restore(previous)
        raise
    count = running.emulator.object_count
    try:
        print(f"Stripe emulator listening on {running.base_url} ({count} objects)", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        _restore(previous)


def _restore(handlers: dict) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
