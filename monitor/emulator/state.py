"""The Stripe emulator's state: stored objects, kept sorted and indexed for Stripe's list semantics.

Every object is stored once, already JSON-encoded, so serving a page of 100 is a join of 100 byte strings
rather than 100 encodings. Each served type keeps its (created, seq, id) keys in one sorted list plus one
sorted list per value of each filterable field; a page is found with `bisect` and read by walking at most
`limit + 1` matches from its start, so no request ever scans every object of a type.

Order: newest first, and objects created in the same second in the order Stripe created them, the last
first, not by id. `seq` stands for that order: a per-store counter given to an id when it is first stored
(objects of one `upsert`, or one fixtures file, in list order); replacing an object keeps its seq.

Includable fields (`INCLUDABLE`: an invoice's `payments`) are kept as loaded but served only when a request
expands them, and never inside an event's `data.object`. A record holding one is encoded twice, with and
without it, so neither answer re-encodes it; an event is stored with its `data.object` already stripped.
"""

import bisect
import heapq
import json
import threading
from collections.abc import Callable, Collection, Hashable, Iterable, Iterator
from dataclasses import dataclass

from monitor.emulator import shapes

# URL path under /v1/ of each listable resource, mapped to the `object` value of its objects.
LIST_RESOURCES: dict[str, str] = {
    "checkout/sessions": "checkout.session",
    "payment_intents": "payment_intent",
    "charges": "charge",
    "refunds": "refund",
    "disputes": "dispute",
    "customers": "customer",
    "subscriptions": "subscription",
    "invoices": "invoice",
    "events": "event",
    "webhook_endpoints": "webhook_endpoint",
}

DEFAULT_ACCOUNT_ID = "acct_emulator"

# (created, seq, id): the sort key; lists are served in descending key order. A `(created,)` tuple sorts
# before every key of that second, which is how the `created` bounds are found.
Key = tuple[int, int, str]
FieldFn = Callable[[dict], Hashable]


class ApiError(Exception):
    """A request Stripe would refuse; rendered by the server as Stripe's error JSON with `status`."""

    def __init__(
        self, status: int, message: str, *, type_: str = "invalid_request_error", code=None, param=None
    ):
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param

    def body(self) -> dict:
        """Stripe's error envelope: `{"error": {"type", "message", and "code"/"param" when set}}`."""
        error = {"type": self.type, "message": self.message}
        if self.code is not None:
            error["code"] = self.code
            error["doc_url"] = f"https://stripe.com/docs/error-codes/{self.code.replace('_', '-')}"
        if self.param is not None:
            error["param"] = self.param
        return {"error": error}


def resource_missing(object_type: str, object_id: str, param: str) -> ApiError:
    """Stripe's 404 for an id that names no object of `object_type`."""
    return ApiError(
        404 if param == "id" else 400,
        f"No such {object_type}: '{object_id}'",
        code="resource_missing",
        param=param,
    )


def _ref(field: str) -> FieldFn:
    """The id in `obj[field]`, whether it holds the id itself or an expanded object."""

    def value(obj: dict) -> Hashable:
        found = obj.get(field)
        if isinstance(found, dict):
            found = found.get("id")
        return found if isinstance(found, str | int | bool) or found is None else repr(found)

    return value


def _invoice_subscription(obj: dict) -> Hashable:
    """An invoice's subscription: the old top-level field, else `parent.subscription_details` (2025+)."""
    top = _ref("subscription")(obj)
    if top is not None:
        return top
    parent = obj.get("parent")
    details = parent.get("subscription_details") if isinstance(parent, dict) else None
    return _ref("subscription")(details) if isinstance(details, dict) else None


def _delivered(obj: dict) -> bool:
    """Stripe's `delivery_success`: true once no webhook of the event is still pending."""
    return not obj.get("pending_webhooks")


# The filterable fields of each listed type: query parameter -> the indexed value of an object.
FILTERS: dict[str, dict[str, FieldFn]] = {
    "checkout.session": {f: _ref(f) for f in ("customer", "payment_intent", "subscription", "status")},
    "payment_intent": {"customer": _ref("customer")},
    "charge": {"customer": _ref("customer"), "payment_intent": _ref("payment_intent")},
    "refund": {"charge": _ref("charge"), "payment_intent": _ref("payment_intent")},
    "dispute": {"charge": _ref("charge"), "payment_intent": _ref("payment_intent")},
    "customer": {},
    "subscription": {"customer": _ref("customer"), "status": _ref("status")},
    "invoice": {
        "customer": _ref("customer"),
        "subscription": _invoice_subscription,
        "status": _ref("status"),
    },
    "event": {"type": _ref("type"), "delivery_success": _delivered},
    "webhook_endpoint": {},
}

# Fields Stripe returns only when expanded (`expand[]=payments`, `expand[]=data.payments` on a list), by type.
# Invoice payments are includable since API 2025-03-31.basil (docs.stripe.com/changelog/basil/2025-03-31/
# add-support-for-multiple-partial-payments-on-invoices); the project pins a later one (stripe_source.py).
INCLUDABLE: dict[str, frozenset[str]] = {"invoice": frozenset({"payments"})}


@dataclass(frozen=True, slots=True)
class Record:
    """One stored object: its identity, sort key, indexed field values and its JSON encodings.

    `raw` is the object as served unasked, without its includable fields; `full` is the object as loaded,
    includable fields and all (the very same bytes as `raw` when it holds none).
    """

    id: str
    object: str
    key: Key
    fields: dict[str, Hashable]
    raw: bytes
    full: bytes

    def decoded(self, include: Collection[str] = ()) -> dict:
        """A fresh dict of the object as served, plus those of its includable fields named in `include`."""
        if self.full is self.raw:
            return json.loads(self.raw)
        includable = INCLUDABLE[self.object]
        if includable.isdisjoint(include):
            return json.loads(self.raw)
        obj = json.loads(self.full)
        for name in includable.difference(include):
            obj.pop(name, None)
        return obj

    def stored_as(self, seq: int) -> "Record":
        """This record with its place in the store's creation order."""
        return Record(self.id, self.object, (self.key[0], seq, self.id), self.fields, self.raw, self.full)


@dataclass(frozen=True, slots=True)
class Filter:
    """Keep objects whose indexed `field` is in `allowed` or starts with one of `prefixes`.

    `exclude` inverts the test (the subscriptions list's default of "every status but canceled").
    """

    field: str
    allowed: frozenset = frozenset()
    prefixes: tuple[str, ...] = ()
    exclude: bool = False

    def matches(self, value: Hashable) -> bool:
        hit = value in self.allowed or (isinstance(value, str) and value.startswith(self.prefixes))
        return hit != self.exclude


_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, check_circular=False)


def encode(obj: object) -> bytes:
    """Compact UTF-8 JSON; about a quarter faster than `json.dumps` defaults, which matters at 100k objects."""
    text = _ENCODER.encode(obj)
    try:
        return text.encode()
    except UnicodeEncodeError:  # a lone surrogate: fall back to \u escapes, as json.dumps would
        return json.dumps(obj, separators=(",", ":")).encode()


def _created(obj: dict) -> int:
    created = obj.get("created")
    return created if isinstance(created, int) and not isinstance(created, bool) else 0


def well_shaped(obj: dict) -> dict:
    """`obj` with every top-level key of Stripe's example of its type; missing keys become None.

    A key whose example value is a list object (`charge.refunds`, `invoice.lines`, …) becomes an empty
    list object whose url names this object instead of the example's. Unknown types come back unchanged.
    """
    missing = shapes.missing_keys(obj)
    if not missing:
        return obj
    example = shapes.examples()[shapes.RESOURCE_OF_OBJECT[obj["object"]]]
    filled = dict(obj)
    for key in missing:
        value = example[key]
        if isinstance(value, dict) and value.get("object") == "list":
            url = str(value.get("url", "")).replace(str(example.get("id")), obj["id"])
            filled[key] = {"object": "list", "data": [], "has_more": False, "url": url}
        else:
            filled[key] = None
    return filled


def without_includable(obj: dict) -> dict:
    """`obj` as Stripe serves it unasked: without its includable fields (`obj` itself if it has none)."""
    hidden = INCLUDABLE.get(obj.get("object"), frozenset()).intersection(obj)
    return {k: v for k, v in obj.items() if k not in hidden} if hidden else obj


def _event_without_includable(event: dict) -> dict:
    """An event whose `data.object` has no includable field: Stripe never sends one in an event."""
    data = event.get("data")
    inner = data.get("object") if isinstance(data, dict) else None
    if not isinstance(inner, dict) or (stripped := without_includable(inner)) is inner:
        return event
    return {**event, "data": {**data, "object": stripped}}


def check_object(obj: object, position: int = 0) -> dict:
    """`obj` if it is a dict with non-empty string "id" and "object"; ValueError naming it by position."""
    if not isinstance(obj, dict):
        raise ValueError(f"object #{position} is a {type(obj).__name__}, not a JSON object")
    object_id, object_type = obj.get("id"), obj.get("object")
    if not isinstance(object_id, str) or not object_id or not isinstance(object_type, str) or not object_type:
        raise ValueError(f'object #{position} needs non-empty string "id" and "object" fields')
    return obj


def make_record(obj: object, position: int = 0) -> Record:
    """Validate, complete and encode one Stripe object; ValueError names the bad one by `position`.

    Its key's seq is 0 until a `Store` stores it (`Record.stored_as`).
    """
    full = well_shaped(check_object(obj, position))
    object_id, object_type = full["id"], full["object"]
    if object_type == "event":  # what an event would never serve is not kept either
        full = _event_without_includable(full)
    served = without_includable(full)
    fields = {name: fn(full) for name, fn in FILTERS.get(object_type, {}).items()}
    try:
        encoded = encode(full)
        raw = encoded if served is full else encode(served)
    except (TypeError, ValueError, RecursionError) as error:
        raise ValueError(f"object #{position} ({object_id}) is not JSON-serializable: {error}") from None
    return Record(object_id, object_type, (_created(full), 0, object_id), fields, raw, encoded)


class _Table:
    """The sorted keys of one served type, overall and per value of each filterable field."""

    def __init__(self, fields: Iterable[str]):
        self.keys: list[Key] = []
        self.by_field: dict[str, dict[Hashable, list[Key]]] = {name: {} for name in fields}

    def add(self, record: Record) -> None:
        bisect.insort(self.keys, record.key)
        for name, value in record.fields.items():
            bisect.insort(self.by_field[name].setdefault(value, []), record.key)

    def remove(self, record: Record) -> None:
        _discard(self.keys, record.key)
        for name, value in record.fields.items():
            keys = self.by_field[name].get(value)
            if keys is not None:
                _discard(keys, record.key)
                if not keys:  # drop empty values so wildcard matching only sees live ones
                    del self.by_field[name][value]

    def rebuild(self, records: Iterable[Record]) -> None:
        """Re-index from scratch: one sort beats many insertions when much of the table changed."""
        self.keys = []
        self.by_field = {name: {} for name in self.by_field}
        for record in records:
            self.keys.append(record.key)
            for name, value in record.fields.items():
                self.by_field[name].setdefault(value, []).append(record.key)
        self.keys.sort()
        for values in self.by_field.values():
            for keys in values.values():
                keys.sort()

    def sources(self, flt: Filter) -> list[list[Key]]:
        """The sorted key lists whose union is exactly the objects passing `flt`."""
        values = self.by_field[flt.field]
        if flt.prefixes or flt.exclude:  # only used on fields with few values (event type, status)
            return [keys for value, keys in values.items() if flt.matches(value)]
        return [values[v] for v in flt.allowed if v in values]


def _discard(keys: list[Key], key: Key) -> None:
    i = bisect.bisect_left(keys, key)
    if i < len(keys) and keys[i] == key:
        del keys[i]


@dataclass(frozen=True, slots=True)
class Bounds:
    """A window of the key space: created range and at most one cursor."""

    created_gte: int | None = None
    created_lte: int | None = None
    starting_after: Key | None = None  # serve keys strictly below this one
    ending_before: Key | None = None  # serve keys strictly above this one

    def slice(self, keys: list[Key]) -> tuple[int, int]:
        """The index range [lo, hi) of `keys` inside the window."""
        lo, hi = 0, len(keys)
        if self.created_gte is not None:
            lo = bisect.bisect_left(keys, (self.created_gte,))  # (c,) sorts before every (c, seq, id)
        if self.created_lte is not None:
            hi = bisect.bisect_left(keys, (self.created_lte + 1,))
        if self.ending_before is not None:
            lo = max(lo, bisect.bisect_right(keys, self.ending_before))
        if self.starting_after is not None:
            hi = min(hi, bisect.bisect_left(keys, self.starting_after))
        return lo, hi


def _walk(keys: list[Key], lo: int, hi: int, backwards: bool) -> Iterator[Key]:
    """keys[lo:hi] newest first, or oldest first when paging backwards; lazily, without copying."""
    indexes = range(lo, hi) if backwards else range(hi - 1, lo - 1, -1)
    return (keys[i] for i in indexes)


class Store:
    """Every stored object by id, and the sorted indexes of the served types. Thread-safe."""

    def __init__(self, objects: Iterable[dict] = ()):
        self._lock = threading.Lock()
        self._records: dict[str, Record] = {}
        self._tables = {object_type: _Table(FILTERS[object_type]) for object_type in LIST_RESOURCES.values()}
        self._account_id: str | None = None
        self._last_seq = 0  # the seq given to the id stored last (Key)
        default = shapes.example("account", id=DEFAULT_ACCOUNT_ID)
        del default["external_accounts"]  # refilled by well_shaped with this account's own url
        self._default_account = make_record(default)
        self.upsert(objects)

    def __len__(self) -> int:
        return len(self._records)

    def upsert(self, objects: Iterable[dict]) -> int:
        """Insert or replace objects by id; all are validated before any is stored. Returns the count.

        New ids are stored in the order given, so of those created in the same second the last is listed
        first; a replaced object keeps its place in that order.
        """
        records = [make_record(obj, i) for i, obj in enumerate(objects)]
        with self._lock:
            changed: dict[str, int] = {}
            for record in records:
                changed[record.object] = changed.get(record.object, 0) + 1
            bulk = {t for t, n in changed.items() if t in self._tables and _bulk(n, self._count(t))}
            for record in records:
                self._replace(record, bulk)
            for object_type in bulk:
                self._tables[object_type].rebuild(
                    r for r in self._records.values() if r.object == object_type
                )
        return len(records)

    def _count(self, object_type: str) -> int:
        return len(self._tables[object_type].keys)

    def _replace(self, record: Record, rebuilding: set[str]) -> None:
        """Store `record`, keeping the indexes of tables not about to be rebuilt up to date."""
        old = self._records.get(record.id)
        if old is not None:
            record = record.stored_as(old.key[1])
            if old.object in self._tables and old.object not in rebuilding:
                self._tables[old.object].remove(old)
        else:
            self._last_seq += 1
            record = record.stored_as(self._last_seq)
        self._records[record.id] = record
        if record.object == "account":
            self._account_id = record.id
        if record.object in self._tables and record.object not in rebuilding:
            self._tables[record.object].add(record)

    def get(self, object_id: str) -> Record | None:
        """The stored object with this id, of any type (dict reads are atomic, so no lock is needed)."""
        return self._records.get(object_id)

    def retrieve(self, object_type: str, object_id: str) -> Record:
        """The object of `object_type` with this id; ApiError 404 resource_missing otherwise."""
        record = self._records.get(object_id)
        if record is None or record.object != object_type:
            raise resource_missing(object_type, object_id, "id")
        return record

    def account(self) -> Record:
        """The last account object loaded, else Stripe's example account with id `acct_emulator`."""
        return self._records.get(self._account_id or "", self._default_account)

    def cursor(self, object_type: str, object_id: str, param: str) -> Key:
        """The sort key of the object named by a pagination cursor; ApiError 400 resource_missing if none."""
        record = self._records.get(object_id)
        if record is None or record.object != object_type:
            raise resource_missing(object_type, object_id, param)
        return record.key

    def page(
        self, object_type: str, filters: list[Filter], bounds: Bounds, limit: int
    ) -> tuple[list[Record], bool]:
        """One page of a list, newest first, and whether more objects lie beyond it.

        The most selective filter picks the sorted key lists to walk; the others are checked per object.
        With an `ending_before` cursor the page is the `limit` objects just newer than the cursor, and
        `has_more` says whether still newer ones exist (Stripe's backward paging).
        """
        backwards = bounds.ending_before is not None
        with self._lock:
            table = self._tables[object_type]
            sources, checks = self._plan(table, filters)
            walks = [_walk(keys, *bounds.slice(keys), backwards) for keys in sources]
            merged = walks[0] if len(walks) == 1 else heapq.merge(*walks, reverse=not backwards)
            found: list[Record] = []
            for key in merged:
                record = self._records[key[2]]
                if all(c.matches(record.fields[c.field]) for c in checks):
                    found.append(record)
                    if len(found) > limit:
                        break
        has_more = len(found) > limit
        found = found[:limit]
        if backwards:
            found.reverse()
        return found, has_more

    @staticmethod
    def _plan(table: _Table, filters: list[Filter]) -> tuple[list[list[Key]], list[Filter]]:
        """Walk the smallest filter's key lists; check the other filters object by object."""
        if not filters:
            return [table.keys], []
        options = [(sum(map(len, table.sources(f))), i, f) for i, f in enumerate(filters)]
        _, _, driver = min(options)
        sources = table.sources(driver) or [[]]
        return sources, [f for f in filters if f is not driver]

    def expanded(self, record: Record, paths: list[list[str]]) -> bytes:
        """The object's JSON with each path expanded (ids replaced by the stored objects they name).

        A path naming an includable field (`payments` of an invoice) includes it, as stored.
        """
        if not paths:
            return record.raw
        includable = INCLUDABLE.get(record.object)
        if includable and all(len(p) == 1 for p in paths) and {p[0] for p in paths} == includable:
            return record.full  # the sync's `expand[]=data.payments`: no decoding, no re-encoding
        obj = record.decoded(include={p[0] for p in paths})
        for path in paths:
            obj = self._expand(obj, path)
        return encode(obj)

    def _expand(self, value: object, path: list[str]) -> object:
        """`value` with `path` expanded; ids naming nothing stored, and absent fields, are left as is."""
        if isinstance(value, list):
            return [self._expand(item, path) for item in value]
        if not isinstance(value, dict) or not path:
            return value
        field, rest = path[0], path[1:]
        if field not in value:
            return value
        child = value[field]
        if isinstance(child, str) and (found := self.get(child)) is not None:
            child = found.decoded(include=rest[:1])
        elif isinstance(child, list):
            child = [self._resolve(item) for item in child]
        result = dict(value)
        result[field] = self._expand(child, rest) if rest else child
        return result

    def _resolve(self, item: object) -> object:
        found = self.get(item) if isinstance(item, str) else None
        return found.decoded() if found is not None else item


def _bulk(incoming: int, existing: int) -> bool:
    """Whether re-sorting a whole table is cheaper than inserting `incoming` keys one by one."""
    return incoming > 64 and incoming * 8 > existing
