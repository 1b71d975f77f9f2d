"""Stripe's HTTP API as the emulator reads a request: which paths exist, the bracket-encoded query
parameters and the checks Stripe makes on them, the API key in the Authorization header, and the errors
Stripe answers for them (its own wording). Pure functions of the request; an ApiError for what Stripe refuses.

`READ_PERMISSIONS` names the permission a restricted key needs for each served path, as Stripe's 403 does.
"""

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote

from monitor.emulator.state import FILTERS, LIST_RESOURCES, ApiError, Filter

MAX_LIMIT = 100
DEFAULT_LIMIT = 10
# Statuses the subscriptions list leaves out unless asked for by `status` (Stripe's documented default).
HIDDEN_SUBSCRIPTION_STATUSES = frozenset({"canceled", "incomplete_expired"})
LIST_PARAMS = frozenset({"limit", "starting_after", "ending_before", "created", "expand"})
CREATED_OPS = frozenset({"gt", "gte", "lt", "lte"})
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
# Routes and parameters


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


def string_param(params: Mapping, name: str) -> str:
    """The single value of parameter `name`; ApiError 400 if it was given as a list or dict."""
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
    limit = _integer(string_param(params, "limit"), "limit")
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
        value = string_param(params, name)
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
# Keys and permissions


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


def permission_error(key: str, account_id: str, permission: str | None = None) -> ApiError:
    """Stripe's 403 for a key that may not use an endpoint, naming the missing permission when given."""
    message = (
        f"The provided key '{mask_key(key)}' does not have the required permissions for this endpoint "
        f"on account '{account_id}'."
    )
    if permission is not None:
        message += f" Having the '{permission}' permission would allow this request to continue."
    return ApiError(403, message)


# ---------------------------------------------------------------------------------------------------------
# The emulator's own admin calls


def objects_of(payload: object) -> list:
    """The objects of an upsert body or a fixtures file, `{"objects": [...]}`; ValueError otherwise."""
    if not isinstance(payload, dict) or not isinstance(payload.get("objects"), list):
        raise ValueError('expected a JSON object {"objects": [...]}')
    return payload["objects"]
