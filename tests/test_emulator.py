"""The Stripe emulator, driven over real HTTP by the real `stripe` SDK (and by plain urllib where the SDK
cannot send what is being tested: bracket variants, Basic auth, no key, the admin JSON endpoints)."""

import base64
import json
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import pytest
import stripe

from monitor.emulator import api, protocol, server, shapes, state
from monitor.emulator.demo import build_demo

KEY = "sk_test_emulator_key_1234"
T0 = 1_700_000_000
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------------------
# Helpers


def client_for(running: server.RunningEmulator, key: str = KEY) -> stripe.StripeClient:
    return stripe.StripeClient(key, base_addresses={"api": running.base_url}, max_network_retries=0)


def raw(client: stripe.StripeClient, path: str, **params) -> dict:
    """The parsed JSON of a GET through the SDK's raw path (same errors as the typed path)."""
    return client.raw_request("get", path, **params).data


def list_all(client: stripe.StripeClient, path: str, **params) -> list[dict]:
    """Every object of a list, page after page with `starting_after`."""
    found, after = [], None
    while True:
        cursor = {"starting_after": after} if after else {}
        page = raw(client, path, limit=100, **params, **cursor)
        found += page["data"]
        if not page["has_more"]:
            return found
        after = page["data"][-1]["id"]


def http(running, method: str, path: str, *, body=None, headers=None, auth: str | None = f"Bearer {KEY}"):
    """(status, headers, parsed JSON) of a plain HTTP request."""
    all_headers = {"Authorization": auth} if auth else {}
    all_headers.update(headers or {})
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(running.base_url + path, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers, json.loads(error.read())


def newest_first(objects: list[dict]) -> list[str]:
    """Stripe's order of objects stored in id order (same-second ones list the one stored last first)."""
    return [o["id"] for o in sorted(objects, key=lambda o: (o["created"], o["id"]), reverse=True)]


def ids(objects: list[dict]) -> list[str]:
    return [o["id"] for o in objects]


# ---------------------------------------------------------------------------------------------------------
# A small world with every served type and every filterable relation


SUBSCRIPTION_STATUSES = ["active", "trialing", "past_due", "canceled", "incomplete_expired", "incomplete"]
EVENT_TYPES = [
    "checkout.session.completed",
    "checkout.session.expired",
    "invoice.paid",
    "customer.subscription.updated",
    "charge.refunded",
]


def build_world() -> dict[str, list[dict]]:
    ex = shapes.example
    world = {
        "customer": [ex("customer", id=f"cus_{k}", created=T0 - 1000 + k) for k in range(5)],
        "subscription": [
            ex(
                "subscription",
                id=f"sub_{k:02d}",
                created=T0 + 10 * k,
                customer=f"cus_{k % 5}",
                status=SUBSCRIPTION_STATUSES[k % 6],
                latest_invoice=f"in_{k:02d}",
            )
            for k in range(12)
        ],
        "invoice": [
            ex(
                "invoice",
                id=f"in_{k:02d}",
                created=T0 + 10 * k + 1,
                customer=f"cus_{k % 5}",
                subscription=f"sub_{k:02d}",
                status=["paid", "open", "draft", "void"][k % 4],
            )
            for k in range(12)
        ],
        "checkout.session": [
            ex(
                "checkout.session",
                id=f"cs_{i:04d}",
                created=T0 + i // 3,  # three a second, stored in id order: ties list by id
                customer="cus_ghost" if i % 50 == 0 else f"cus_{i % 5}",
                status=["complete", "open", "expired"][i % 3],
                payment_intent=f"pi_{i:04d}" if i % 2 == 0 else None,
                subscription=f"sub_{i % 12:02d}" if i % 4 == 0 else None,
            )
            for i in range(250)
        ],
        "payment_intent": [
            ex("payment_intent", id=f"pi_{i:04d}", created=T0 + i // 3, customer=f"cus_{i % 5}")
            for i in range(0, 80, 2)
        ],
        "charge": [
            ex(
                "charge",
                id=f"ch_{j:03d}",
                created=T0 + j,
                customer=f"cus_{j % 5}",
                payment_intent=f"pi_{2 * j:04d}",
            )
            for j in range(30)
        ],
        "refund": [
            ex(
                "refund",
                id=f"re_{j:03d}",
                created=T0 + j,
                charge=f"ch_{j % 4:03d}",
                payment_intent=f"pi_{j % 3:04d}",
            )
            for j in range(10)
        ],
        "dispute": [
            ex(
                "dispute",
                id=f"dp_{j:03d}",
                created=T0 + j,
                charge=f"ch_{j % 2:03d}",
                payment_intent=f"pi_{j % 3:04d}",
            )
            for j in range(6)
        ],
        "event": [
            ex("event", id=f"evt_{j:03d}", created=T0 + j, type=EVENT_TYPES[j % 5], pending_webhooks=j % 3)
            for j in range(60)
        ],
        "webhook_endpoint": [ex("webhook_endpoint", id=f"we_{k}", created=T0 + k) for k in range(3)],
    }
    return world


@pytest.fixture(scope="module")
def world() -> dict[str, list[dict]]:
    return build_world()


@pytest.fixture(scope="module")
def running(world):
    objects = [obj for objects in world.values() for obj in objects]
    with server.start(objects) as running:
        yield running


@pytest.fixture(scope="module")
def client(running) -> stripe.StripeClient:
    return client_for(running)


# ---------------------------------------------------------------------------------------------------------
# Pagination


def test_lists_newest_first_across_pages(client, world):
    seen, after, pages = [], None, 0
    while True:
        params = {"limit": 7, **({"starting_after": after} if after else {})}
        page = raw(client, "/v1/checkout/sessions", **params)
        assert page["object"] == "list" and page["url"] == "/v1/checkout/sessions"
        assert len(page["data"]) <= 7
        seen += ids(page["data"])
        pages += 1
        if not page["has_more"]:
            break
        after = page["data"][-1]["id"]
    assert seen == newest_first(world["checkout.session"])  # every object once, in Stripe's order
    assert pages == -(-250 // 7)


def test_sdk_auto_paging_visits_every_object_once(client, world):
    listed = [s.id for s in client.v1.checkout.sessions.list({"limit": 40}).auto_paging_iter()]
    assert listed == newest_first(world["checkout.session"])


def test_ending_before_pages_backwards_over_every_object(client, world):
    expected = newest_first(world["checkout.session"])
    oldest = expected[-1]
    seen, before = [], oldest
    while True:
        page = raw(client, "/v1/checkout/sessions", limit=9, ending_before=before)
        assert ids(page["data"]) == sorted(ids(page["data"]), reverse=True)  # each page newest first
        seen = ids(page["data"]) + seen
        if not page["has_more"]:
            break
        before = page["data"][0]["id"]
    assert seen == expected[:-1]  # everything newer than the cursor, each once


def test_sdk_backward_auto_paging_visits_every_newer_object(client, world):
    expected = newest_first(world["checkout.session"])
    listed = [
        s.id
        for s in client.v1.checkout.sessions.list(
            {"limit": 25, "ending_before": expected[-1]}
        ).auto_paging_iter()
    ]
    assert listed == expected[-2::-1]  # oldest first, as the SDK yields backward pages


def test_default_limit_is_ten_and_limits_of_1_and_100_are_accepted(client):
    assert len(raw(client, "/v1/checkout/sessions")["data"]) == 10
    assert len(raw(client, "/v1/checkout/sessions", limit=1)["data"]) == 1
    assert len(raw(client, "/v1/checkout/sessions", limit=100)["data"]) == 100


@pytest.mark.parametrize("limit", [0, -1, 101, "abc", "1.5"])
def test_out_of_range_or_non_integer_limit_is_invalid_request(client, limit):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        raw(client, "/v1/checkout/sessions", limit=limit)
    assert caught.value.http_status == 400
    assert caught.value.param == "limit"


@pytest.mark.parametrize("cursor", ["starting_after", "ending_before"])
def test_unknown_cursor_is_resource_missing_naming_the_param(client, cursor):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        raw(client, "/v1/checkout/sessions", **{cursor: "cs_nope"})
    assert caught.value.http_status == 400
    assert caught.value.code == "resource_missing"
    assert caught.value.param == cursor
    assert "cs_nope" in caught.value.user_message


def test_both_cursors_at_once_are_refused(client):
    with pytest.raises(stripe.InvalidRequestError):
        raw(client, "/v1/checkout/sessions", starting_after="cs_0010", ending_before="cs_0001")


def test_unknown_parameters_are_refused_not_ignored(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        raw(client, "/v1/checkout/sessions", custmer="cus_1")
    assert caught.value.param == "custmer"


# ---------------------------------------------------------------------------------------------------------
# created


def created_ids(world, low=None, high=None):
    return newest_first(
        [
            o
            for o in world["checkout.session"]
            if (low is None or o["created"] >= low) and (high is None or o["created"] <= high)
        ]
    )


@pytest.mark.parametrize(
    "created, low, high",
    [
        (T0 + 10, T0 + 10, T0 + 10),
        ({"gt": T0 + 10}, T0 + 11, None),
        ({"gte": T0 + 10}, T0 + 10, None),
        ({"lt": T0 + 10}, None, T0 + 9),
        ({"lte": T0 + 10}, None, T0 + 10),
        ({"gte": T0 + 20, "lt": T0 + 30}, T0 + 20, T0 + 29),
        ({"gt": T0 + 500}, T0 + 501, None),
    ],
)
def test_created_filters_select_exactly_the_matching_range(client, world, created, low, high):
    assert ids(list_all(client, "/v1/checkout/sessions", created=created)) == created_ids(world, low, high)


def test_created_filter_combines_with_cursor(client, world):
    expected = created_ids(world, T0 + 20, T0 + 40)
    page = raw(
        client,
        "/v1/checkout/sessions",
        created={"gte": T0 + 20, "lte": T0 + 40},
        starting_after=expected[4],
        limit=5,
    )
    assert ids(page["data"]) == expected[5:10]


def test_non_integer_created_is_invalid_request(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        raw(client, "/v1/checkout/sessions", created={"gte": "yesterday"})
    assert caught.value.param == "created[gte]"


# ---------------------------------------------------------------------------------------------------------
# expand


def test_expand_on_lists_replaces_ids_by_stored_objects(client):
    page = raw(
        client,
        "/v1/checkout/sessions",
        limit=100,
        created={"lte": T0 + 10},
        expand=["data.customer", "data.payment_intent"],
    )
    by_id = {s["id"]: s for s in page["data"]}
    assert by_id["cs_0004"]["customer"]["object"] == "customer"
    assert by_id["cs_0004"]["customer"]["id"] == "cus_4"
    assert by_id["cs_0004"]["payment_intent"]["object"] == "payment_intent"
    assert by_id["cs_0004"]["payment_intent"]["id"] == "pi_0004"
    assert by_id["cs_0000"]["customer"] == "cus_ghost"  # an id naming nothing stored stays an id
    assert by_id["cs_0001"]["payment_intent"] is None


def test_expand_follows_nested_paths(client):
    subscriptions = raw(client, "/v1/subscriptions", expand=["data.latest_invoice.customer"])["data"]
    assert subscriptions
    for subscription in subscriptions:
        invoice = subscription["latest_invoice"]
        assert invoice["object"] == "invoice"
        assert invoice["customer"]["object"] == "customer"
        assert invoice["customer"]["id"] == subscription["customer"]


def test_expand_on_retrieve_and_typed_sdk_objects(client):
    session = client.v1.checkout.sessions.retrieve("cs_0004", {"expand": ["customer", "subscription"]})
    assert session.customer.id == "cus_4"
    assert session.subscription.id == "sub_04"
    assert session.subscription.object == "subscription"


def test_list_expand_without_data_prefix_is_refused(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        raw(client, "/v1/checkout/sessions", expand=["customer"])
    assert caught.value.param == "expand"


def test_bracket_forms_expand_and_types_with_empty_brackets(running):
    status, _, page = http(
        running, "GET", "/v1/events?limit=100&types[]=invoice.paid&types[]=charge.refunded&expand[]=data.data"
    )
    assert status == 200
    assert {e["type"] for e in page["data"]} == {"invoice.paid", "charge.refunded"}
    status, _, page = http(
        running, "GET", "/v1/checkout/sessions?limit=3&expand[]=data.customer&created[lte]=1700000050"
    )
    assert status == 200 and page["data"][0]["customer"]["object"] == "customer"
    assert page["data"][0]["created"] == T0 + 50


# ---------------------------------------------------------------------------------------------------------
# Filters


FILTER_CASES = [
    ("/v1/checkout/sessions", "checkout.session", "customer", "cus_2"),
    ("/v1/checkout/sessions", "checkout.session", "payment_intent", "pi_0010"),
    ("/v1/checkout/sessions", "checkout.session", "subscription", "sub_04"),
    ("/v1/checkout/sessions", "checkout.session", "status", "expired"),
    ("/v1/payment_intents", "payment_intent", "customer", "cus_3"),
    ("/v1/charges", "charge", "customer", "cus_1"),
    ("/v1/charges", "charge", "payment_intent", "pi_0008"),
    ("/v1/refunds", "refund", "charge", "ch_002"),
    ("/v1/refunds", "refund", "payment_intent", "pi_0001"),
    ("/v1/disputes", "dispute", "charge", "ch_001"),
    ("/v1/disputes", "dispute", "payment_intent", "pi_0002"),
    ("/v1/invoices", "invoice", "customer", "cus_0"),
    ("/v1/invoices", "invoice", "subscription", "sub_03"),
    ("/v1/invoices", "invoice", "status", "open"),
    ("/v1/subscriptions", "subscription", "customer", "cus_0"),
    ("/v1/subscriptions", "subscription", "status", "past_due"),
]


@pytest.mark.parametrize("path, object_type, field, value", FILTER_CASES)
def test_each_filter_returns_exactly_the_matching_objects(client, world, path, object_type, field, value):
    hidden = (
        {"canceled", "incomplete_expired"} if object_type == "subscription" and field != "status" else set()
    )
    expected = newest_first(
        [o for o in world[object_type] if o[field] == value and o["status"] not in hidden]
    )
    assert expected, "the case must match something"
    listed = list_all(client, path, **{field: value})
    assert ids(listed) == expected


def test_filters_combine(client, world):
    expected = newest_first(
        [s for s in world["checkout.session"] if s["customer"] == "cus_2" and s["status"] == "complete"]
    )
    assert ids(list_all(client, "/v1/checkout/sessions", customer="cus_2", status="complete")) == expected
    assert expected


def test_filter_on_unknown_value_gives_an_empty_list(client):
    page = raw(client, "/v1/charges", customer="cus_nobody")
    assert page["data"] == [] and page["has_more"] is False


def test_filtered_pages_follow_cursors(client, world):
    expected = newest_first([s for s in world["checkout.session"] if s["customer"] == "cus_3"])
    seen, after = [], None
    while True:
        page = raw(
            client,
            "/v1/checkout/sessions",
            customer="cus_3",
            limit=6,
            **({"starting_after": after} if after else {}),
        )
        seen += ids(page["data"])
        if not page["has_more"]:
            break
        after = seen[-1]
    assert seen == expected


def test_subscriptions_list_hides_canceled_and_incomplete_expired_by_default(client, world):
    listed = list_all(client, "/v1/subscriptions")
    assert {s["status"] for s in listed} == {"active", "trialing", "past_due", "incomplete"}
    everything = list_all(client, "/v1/subscriptions", status="all")
    assert ids(everything) == newest_first(world["subscription"])
    canceled = list_all(client, "/v1/subscriptions", status="canceled")
    assert canceled and {s["status"] for s in canceled} == {"canceled"}
    sdk = [s.id for s in client.v1.subscriptions.list({"limit": 100}).auto_paging_iter()]
    assert sdk == ids(listed)


def test_events_filter_by_exact_type(client, world):
    expected = newest_first([e for e in world["event"] if e["type"] == "invoice.paid"])
    assert ids(list_all(client, "/v1/events", type="invoice.paid")) == expected


def test_events_filter_by_wildcard_type(client, world):
    expected = newest_first([e for e in world["event"] if e["type"].startswith("checkout.session.")])
    listed = [
        e.id for e in client.v1.events.list({"type": "checkout.session.*", "limit": 100}).auto_paging_iter()
    ]
    assert listed == expected


def test_events_filter_by_types_list(client, world):
    wanted = {"invoice.paid", "charge.refunded"}
    expected = newest_first([e for e in world["event"] if e["type"] in wanted])
    assert ids(list_all(client, "/v1/events", types=sorted(wanted))) == expected


@pytest.mark.parametrize("delivered", [False, True])
def test_events_filter_by_delivery_success(client, world, delivered):
    expected = newest_first([e for e in world["event"] if (e["pending_webhooks"] == 0) == delivered])
    listed = client.v1.events.list({"delivery_success": delivered, "limit": 100})
    assert [e.id for e in listed.data] == expected


def test_events_type_and_types_together_are_refused(client):
    with pytest.raises(stripe.InvalidRequestError):
        raw(client, "/v1/events", type="invoice.paid", types=["charge.refunded"])


# ---------------------------------------------------------------------------------------------------------
# Same-second order: Stripe lists objects created in the same second in its own creation order, newest
# first, not by id. Loaded in the order c, a, b, they are listed b, a, c (by id it would be c, b, a).


SAME_SECOND = ["evt_c", "evt_a", "evt_b"]


def same_second_events() -> list[dict]:
    return [
        shapes.example("event", id="evt_before", created=T0 - 1, type="invoice.paid"),
        *(shapes.example("event", id=i, created=T0, type="invoice.paid") for i in SAME_SECOND),
        shapes.example("event", id="evt_after", created=T0 + 1, type="invoice.paid"),
    ]


def test_same_second_objects_list_the_one_stored_last_first():
    with server.start(same_second_events()) as running:
        client = client_for(running)
        assert ids(raw(client, "/v1/events")["data"]) == [
            "evt_after",
            "evt_b",
            "evt_a",
            "evt_c",
            "evt_before",
        ]
        assert ids(raw(client, "/v1/events", type="invoice.paid")["data"])[1:4] == ["evt_b", "evt_a", "evt_c"]


def test_same_second_order_holds_across_pages_of_one():
    with server.start(same_second_events()) as running:
        client = client_for(running)
        seen, after = [], "evt_after"
        while True:
            page = raw(client, "/v1/events", limit=1, starting_after=after)
            seen += ids(page["data"])
            if not page["has_more"]:
                break
            after = seen[-1]
        listed = [e.id for e in client.v1.events.list({"limit": 1}).auto_paging_iter()]
    assert seen == ["evt_b", "evt_a", "evt_c", "evt_before"]
    assert listed == ["evt_after", "evt_b", "evt_a", "evt_c", "evt_before"]


def test_same_second_order_holds_paging_backwards():
    with server.start(same_second_events()) as running:
        client = client_for(running)
        seen, before = [], "evt_before"
        while True:
            page = raw(client, "/v1/events", limit=1, ending_before=before)
            seen = ids(page["data"]) + seen
            if not page["has_more"]:
                break
            before = seen[0]
        two = raw(client, "/v1/events", limit=2, ending_before="evt_c")
    assert seen == ["evt_after", "evt_b", "evt_a", "evt_c"]
    assert ids(two["data"]) == ["evt_b", "evt_a"] and two["has_more"] is True


@pytest.mark.parametrize(
    "created, expected",
    [
        (T0, SAME_SECOND[::-1]),
        ({"gte": T0}, ["evt_after", *SAME_SECOND[::-1]]),
        ({"lte": T0}, [*SAME_SECOND[::-1], "evt_before"]),
        ({"gt": T0}, ["evt_after"]),
        ({"lt": T0}, ["evt_before"]),
    ],
)
def test_created_bounds_take_the_whole_second_in_creation_order(created, expected):
    with server.start(same_second_events()) as running:
        assert ids(raw(client_for(running), "/v1/events", created=created)["data"]) == expected


def test_replacing_an_object_keeps_its_place_among_its_second():
    with server.start(same_second_events()) as running:
        running.emulator.upsert([shapes.example("event", id="evt_c", created=T0, type="charge.refunded")])
        running.emulator.upsert([shapes.example("event", id="evt_new", created=T0, type="invoice.paid")])
        client = client_for(running)
        listed = ids(raw(client, "/v1/events", created=T0)["data"])
        refunds = ids(raw(client, "/v1/events", type="charge.refunded")["data"])
        paid = ids(raw(client, "/v1/events", type="invoice.paid", created=T0)["data"])
    assert listed == ["evt_new", "evt_b", "evt_a", "evt_c"]
    assert refunds == ["evt_c"] and paid == ["evt_new", "evt_b", "evt_a"]


def test_a_fixtures_file_is_stored_in_its_order(tmp_path):
    path = tmp_path / "fixtures.json"
    path.write_text(json.dumps({"objects": same_second_events()}))
    with server.start(server.load_fixtures(path)) as running:
        assert ids(raw(client_for(running), "/v1/events", created=T0)["data"]) == SAME_SECOND[::-1]


# ---------------------------------------------------------------------------------------------------------
# Includable fields: an invoice's `payments` is served only when asked for with `expand`, and never inside
# an event (Stripe API reference, "The Invoice object": payments is includable since 2025-03-31.basil).


def invoice_payment(invoice_id: str, intent_id: str) -> dict:
    return shapes.example(
        "invoice_payment",
        id="inpay_" + invoice_id[3:],
        invoice=invoice_id,
        amount_paid=4900,
        amount_requested=4900,
        currency="usd",
        created=T0,
        status="paid",
        payment={"type": "payment_intent", "payment_intent": intent_id},
        status_transitions={"canceled_at": None, "paid_at": T0},
    )


def invoice_with_payments(invoice_id: str, created: int) -> dict:
    payments = {
        "object": "list",
        "data": [invoice_payment(invoice_id, "pi_" + invoice_id[3:])],
        "has_more": False,
        "url": "/v1/invoice_payments",
    }
    return shapes.example("invoice", id=invoice_id, created=created, status="paid", payments=payments)


def paid_world() -> list[dict]:
    invoices = [invoice_with_payments(f"in_paid{k}", T0 + k) for k in range(3)]
    return [
        *invoices,
        shapes.example("subscription", id="sub_paid", created=T0, latest_invoice="in_paid0"),
        *(
            shapes.example(
                "event", id=f"evt_paid{k}", created=T0 + k + 1, type="invoice.paid", data={"object": inv}
            )
            for k, inv in enumerate(invoices)
        ),
    ]


def test_invoice_list_leaves_out_payments_unless_expanded():
    with server.start(paid_world()) as running:
        client = client_for(running)
        plain = raw(client, "/v1/invoices")["data"]
        expanded = raw(client, "/v1/invoices", expand=["data.payments"])["data"]
        customers = raw(client, "/v1/invoices", expand=["data.customer"])["data"]
    assert len(plain) == 3 and all("payments" not in i for i in plain)
    assert all("payments" not in i for i in customers)
    assert [i["payments"]["data"][0]["invoice"] for i in expanded] == ids(plain)
    payment = expanded[0]["payments"]["data"][0]
    assert payment["object"] == "invoice_payment" and payment["id"] == "inpay_paid2"
    assert payment["payment"] == {"type": "payment_intent", "payment_intent": "pi_paid2"}
    assert [{k: v for k, v in i.items() if k != "payments"} for i in expanded] == plain


def test_invoice_retrieve_includes_payments_only_when_expanded():
    with server.start(paid_world()) as running:
        client = client_for(running)
        plain = raw(client, "/v1/invoices/in_paid1")
        expanded = raw(client, "/v1/invoices/in_paid1", expand=["payments"])
        typed = client.v1.invoices.retrieve("in_paid1", {"expand": ["payments"]})
    assert "payments" not in plain
    assert expanded["payments"]["data"][0]["payment"]["payment_intent"] == "pi_paid1"
    assert typed.payments.data[0].id == "inpay_paid1"


def test_an_expanded_invoice_inside_another_object_includes_payments_only_when_asked():
    with server.start(paid_world()) as running:
        client = client_for(running)
        plain = raw(client, "/v1/subscriptions/sub_paid", expand=["latest_invoice"])
        deep = raw(client, "/v1/subscriptions", expand=["data.latest_invoice.payments"])["data"]
    assert plain["latest_invoice"]["id"] == "in_paid0" and "payments" not in plain["latest_invoice"]
    assert deep[0]["latest_invoice"]["payments"]["data"][0]["id"] == "inpay_paid0"


def test_an_event_about_an_invoice_never_carries_its_payments():
    with server.start(paid_world()) as running:
        client = client_for(running)
        served = [
            *raw(client, "/v1/events")["data"],
            *raw(client, "/v1/events", expand=["data.data.object.payments"])["data"],
            raw(client, "/v1/events/evt_paid1"),
            raw(client, "/v1/events/evt_paid1", expand=["data.object.payments"]),
        ]
    assert len(served) == 8
    for event in served:
        assert event["data"]["object"]["object"] == "invoice"
        assert "payments" not in event["data"]["object"]
    assert served[0]["data"]["object"]["status"] == "paid"


# ---------------------------------------------------------------------------------------------------------
# Retrieve, account, errors


def test_retrieve_returns_the_stored_object(client, world):
    stored = world["charge"][3]
    served = raw(client, f"/v1/charges/{stored['id']}")
    assert served == json.loads(json.dumps(stored))


def test_missing_object_is_a_404_resource_missing(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.checkout.sessions.retrieve("cs_x")
    error = caught.value
    assert error.http_status == 404
    assert error.json_body["error"]["type"] == "invalid_request_error"
    assert error.code == "resource_missing" and error.param == "id"
    assert error.json_body["error"]["message"] == "No such checkout.session: 'cs_x'"


def test_object_of_another_type_is_not_found(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        raw(client, "/v1/charges/cus_1")
    assert caught.value.http_status == 404


def test_unknown_url_is_a_404_unrecognized_request_url(client):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        raw(client, "/v1/xyz")
    assert caught.value.http_status == 404
    assert caught.value.user_message.startswith("Unrecognized request URL (GET: /v1/xyz)")


def test_writes_are_unrecognized_requests(client, running):
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create({"email": "a@example.com"})
    assert caught.value.http_status == 404
    assert "POST: /v1/customers" in caught.value.user_message
    status, _, body = http(running, "DELETE", "/v1/customers/cus_1")
    assert status == 404 and body["error"]["type"] == "invalid_request_error"


def test_every_response_has_a_request_id_and_json_content_type(running):
    for path in ("/v1/account", "/v1/charges/nope", "/v1/xyz", "/_emulator/stats"):
        _, headers, _ = http(running, "GET", path)
        assert headers["Request-Id"].startswith("req_")
        assert headers["Content-Type"] == "application/json"
    _, headers, _ = http(running, "GET", "/v1/account", auth=None)
    assert headers["Request-Id"].startswith("req_")


def test_account_is_stripes_example_account_with_emulator_id(client):
    account = raw(client, "/v1/account")
    assert account["id"] == "acct_emulator" and account["object"] == "account"
    assert shapes.missing_keys(account) == set()
    assert account["external_accounts"]["url"] == "/v1/accounts/acct_emulator/external_accounts"


def test_loaded_account_replaces_the_example_account():
    with server.start([{"object": "account", "id": "acct_mine", "email": "ops@example.com"}]) as running:
        account = raw(client_for(running), "/v1/account")
    assert account["id"] == "acct_mine" and account["email"] == "ops@example.com"
    assert shapes.missing_keys(account) == set()


# ---------------------------------------------------------------------------------------------------------
# Shapes: every served object has every key of Stripe's published example of its type


@pytest.mark.parametrize("resource, object_type", sorted(state.LIST_RESOURCES.items()))
def test_every_served_type_has_all_keys_of_stripes_example(resource, object_type):
    minimal = {"id": f"x_{object_type}_1", "object": object_type, "created": T0}
    example_keys = set(shapes.examples()[shapes.RESOURCE_OF_OBJECT[object_type]])
    with server.start([minimal]) as running:
        client = client_for(running)
        retrieved = raw(client, f"/v1/{resource}/{minimal['id']}")
        listed = (
            raw(client, f"/v1/{resource}", status="all")
            if object_type == "subscription"
            else raw(client, f"/v1/{resource}")
        )
    assert listed["data"] == [retrieved]
    assert set(retrieved) >= example_keys
    assert shapes.missing_keys(retrieved) == set()
    assert retrieved["id"] == minimal["id"] and retrieved["created"] == T0
    for value in retrieved.values():
        if isinstance(value, dict) and value.get("object") == "list":  # charge.refunds, invoice.lines, …
            assert value["data"] == [] and minimal["id"] in value["url"]


def test_full_objects_keep_their_own_values():
    session = shapes.example("checkout.session", id="cs_full", created=T0, amount_total=14900)
    with server.start([session]) as running:
        served = raw(client_for(running), "/v1/checkout/sessions/cs_full")
    assert served["amount_total"] == 14900 and served == json.loads(json.dumps(session))


def test_unknown_object_types_are_stored_but_not_routed():
    objects = [
        {"object": "price", "id": "price_1", "unit_amount": 100},
        shapes.example("checkout.session", id="cs_p", created=T0, customer="price_1"),
    ]
    with server.start(objects) as running:
        client = client_for(running)
        with pytest.raises(stripe.InvalidRequestError):
            raw(client, "/v1/prices/price_1")
        session = raw(client, "/v1/checkout/sessions/cs_p", expand=["customer"])
    assert session["customer"]["unit_amount"] == 100


# ---------------------------------------------------------------------------------------------------------
# Keys


@pytest.mark.parametrize("key", ["sk_test_anything", "rk_test_readonly_key"])
def test_any_test_key_is_accepted_without_a_configured_key(running, key):
    assert raw(client_for(running, key), "/v1/account")["id"] == "acct_emulator"


@pytest.mark.parametrize("key", ["sk_live_abcdefghijklmnop", "pk_test_abcdefghijklmnop", "nonsense_key_0000"])
def test_other_keys_are_rejected_with_a_masked_key(running, key):
    with pytest.raises(stripe.AuthenticationError) as caught:
        raw(client_for(running, key), "/v1/account")
    error = caught.value
    assert error.http_status == 401
    assert error.json_body["error"]["type"] == "invalid_request_error"
    message = error.json_body["error"]["message"]
    assert message.startswith("Invalid API Key provided: ") and key not in message
    assert message.endswith(key[-4:]) and "****" in message


def test_short_keys_are_masked_entirely(running):
    status, _, body = http(running, "GET", "/v1/account", auth="Bearer sk_live_abc")
    assert status == 401 and body["error"]["message"] == "Invalid API Key provided: sk_live_****"


def test_configured_key_is_the_only_key_accepted():
    with server.start(api_key="sk_test_only_this_one") as running:
        assert raw(client_for(running, "sk_test_only_this_one"), "/v1/account")["object"] == "account"
        with pytest.raises(stripe.AuthenticationError) as caught:
            raw(client_for(running, "sk_test_another_one_9999"), "/v1/account")
    assert caught.value.json_body["error"]["message"] == "Invalid API Key provided: sk_test_****9999"


def test_basic_auth_with_the_key_as_username_is_accepted(running):
    basic = "Basic " + base64.b64encode(f"{KEY}:".encode()).decode()
    status, _, account = http(running, "GET", "/v1/account", auth=basic)
    assert status == 200 and account["id"] == "acct_emulator"


def test_missing_key_is_a_401(running):
    status, _, body = http(running, "GET", "/v1/charges", auth=None)
    assert status == 401
    assert body["error"]["type"] == "invalid_request_error"
    assert "did not provide an API key" in body["error"]["message"]


def test_admin_endpoints_need_the_key_too(running):
    status, _, _ = http(running, "GET", "/_emulator/stats", auth="Bearer sk_live_nope_nope_nope")
    assert status == 401


def test_demo_invoices_hold_payments_of_stripes_invoice_payment_shape():
    objects = build_demo(datetime(2026, 11, 26, 11, 20, tzinfo=UTC)).objects
    invoices = [o for o in objects if o["object"] == "invoice"]
    intents = {o["id"] for o in objects if o["object"] == "payment_intent"}
    events = [o for o in objects if o["object"] == "event" and o["type"] == "invoice.paid"]
    assert invoices and events
    for invoice in invoices:
        (payment,) = invoice["payments"]["data"]
        assert set(payment) == set(shapes.examples()["invoice_payment"])
        assert payment["id"] == "inpay_" + invoice["id"][3:] and payment["invoice"] == invoice["id"]
        assert payment["payment"]["payment_intent"] in intents
        assert payment["amount_paid"] == invoice["amount_paid"] and payment["status"] == "paid"
    with server.start(objects) as running:
        client = client_for(running)
        served = raw(client, "/v1/events", type="invoice.paid", limit=100)["data"]
    assert served and all("payments" not in e["data"]["object"] for e in served)


# ---------------------------------------------------------------------------------------------------------
# Denied paths: a restricted key without Read on a resource (Stripe's 403 names the missing permission)


READ_PERMISSIONS = [
    ("/v1/checkout/sessions", "rak_checkout_session_read"),
    ("/v1/customers", "rak_customer_read"),
    ("/v1/invoices", "rak_invoice_read"),
    ("/v1/payment_intents", "rak_payment_intent_read"),
    ("/v1/charges", "rak_charge_read"),
    ("/v1/refunds", "rak_refund_read"),
    ("/v1/disputes", "rak_dispute_read"),
    ("/v1/subscriptions", "rak_subscription_read"),
    ("/v1/events", "rak_event_read"),
    ("/v1/webhook_endpoints", "rak_webhook_endpoint_read"),
    ("/v1/account", "rak_account_read"),
]


def permission_message(rak: str, key: str = KEY, account: str = "acct_emulator") -> str:
    return (
        f"The provided key '{protocol.mask_key(key)}' does not have the required permissions for this endpoint "
        f"on account '{account}'. Having the '{rak}' permission would allow this request to continue."
    )


def test_a_denied_list_is_a_403_naming_the_missing_permission():
    objects = [
        shapes.example("checkout.session", id="cs_1", created=T0),
        shapes.example("customer", id="cus_1", created=T0),
    ]
    with server.start(objects, deny=["/v1/checkout/sessions"]) as running:
        client = client_for(running)
        with pytest.raises(stripe.PermissionError) as listed:
            client.v1.checkout.sessions.list()
        with pytest.raises(stripe.PermissionError) as retrieved:
            client.v1.checkout.sessions.retrieve("cs_1")
        assert ids(raw(client, "/v1/customers")["data"]) == ["cus_1"]
        assert raw(client, "/v1/customers/cus_1")["id"] == "cus_1"
        assert raw(client, "/v1/account")["id"] == "acct_emulator"
    for caught in (listed, retrieved):
        error = caught.value
        assert error.http_status == 403
        assert error.json_body["error"]["type"] == "invalid_request_error"
        assert error.user_message == permission_message("rak_checkout_session_read")
    assert "sk_test_****1234" in listed.value.user_message


@pytest.mark.parametrize("path, rak", READ_PERMISSIONS)
def test_each_denied_path_names_its_read_permission(path, rak):
    with server.start([{"object": "account", "id": "acct_mine"}], deny=[path]) as running:
        status, _, body = http(running, "GET", path)
        others = [http(running, "GET", p)[0] for p, _ in READ_PERMISSIONS if p != path]
    assert status == 403
    assert body["error"] == {
        "type": "invalid_request_error",
        "message": permission_message(rak, account="acct_mine"),
    }
    assert others == [200] * (len(READ_PERMISSIONS) - 1)


def test_deny_refuses_a_path_it_does_not_serve():
    for path in ("/v1/prices", "/v1/customers/cus_1", "checkout/sessions"):
        with pytest.raises(ValueError, match="deny"):
            api.Emulator(deny=[path])


def test_emulator_command_denies_each_path_given(tmp_path):
    fixtures = tmp_path / "fixtures.json"
    fixtures.write_text(json.dumps({"objects": [{"object": "customer", "id": "cus_1", "created": T0}]}))
    command = [sys.executable, "-m", "monitor", "emulator", "--port", "0", "--fixtures", str(fixtures)]
    command += ["--deny", "/v1/checkout/sessions", "--deny", "/v1/invoices"]
    with subprocess.Popen(
        command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        try:
            ready, _, _ = select.select([process.stdout], [], [], 20)
            line = process.stdout.readline() if ready else ""
            assert line.startswith("Stripe emulator listening on "), line or "no startup line"
            client = stripe.StripeClient(KEY, base_addresses={"api": line.split()[4]}, max_network_retries=0)
            for path in ("/v1/checkout/sessions", "/v1/invoices"):
                with pytest.raises(stripe.PermissionError):
                    raw(client, path)
            assert ids(raw(client, "/v1/customers")["data"]) == ["cus_1"]
            process.send_signal(signal.SIGTERM)
            process.communicate(timeout=10)
        finally:
            process.kill()
    assert process.returncode == 0


# ---------------------------------------------------------------------------------------------------------
# Faults


def test_rate_limit_answers_429_rate_limit_error():
    with server.start(rate_limit=2) as running:
        client = client_for(running)
        outcomes = []
        for _ in range(6):
            try:
                raw(client, "/v1/account")
                outcomes.append("ok")
            except stripe.RateLimitError as error:
                assert error.http_status == 429 and error.json_body["error"]["code"] == "rate_limit"
                assert error.json_body["error"]["type"] == "invalid_request_error"
                assert error.user_message.startswith("Request rate limit exceeded.")
                outcomes.append("limited")
        stats = running.emulator.stats()
    assert outcomes[:2] == ["ok", "ok"] and "limited" in outcomes
    assert stats["rate_limited"] == outcomes.count("limited")
    assert stats["requests"] == 6


def test_error_rate_of_one_answers_500_api_error():
    with server.start(error_rate=1.0) as running:
        with pytest.raises(stripe.APIError) as caught:
            raw(client_for(running), "/v1/charges")
        assert running.emulator.stats()["errors_injected"] == 1
    assert caught.value.http_status == 500
    assert caught.value.json_body["error"]["type"] == "api_error"


def test_error_injection_is_repeatable_for_a_seed():
    def outcomes(seed: int) -> list[int]:
        with server.start(error_rate=0.5, seed=seed) as running:
            return [http(running, "GET", "/v1/customers")[0] for _ in range(30)]

    first = outcomes(7)
    assert first == outcomes(7)
    assert set(first) == {200, 500}


def test_latency_is_applied_without_blocking_other_requests():
    with server.start(latency_ms=300) as running:
        started = time.perf_counter()
        http(running, "GET", "/v1/account")
        single = time.perf_counter() - started

        results = []
        threads = [
            threading.Thread(target=lambda: results.append(http(running, "GET", "/v1/account")[0]))
            for _ in range(4)
        ]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        parallel = time.perf_counter() - started
    assert single >= 0.3
    assert results == [200] * 4 and parallel < 0.9  # four sleeps overlapped, not 1.2 s in a row


def test_faults_spare_the_admin_endpoints():
    with server.start(error_rate=1.0, rate_limit=1) as running:
        for _ in range(5):
            assert http(running, "GET", "/_emulator/stats")[0] == 200


def test_bad_options_are_refused():
    for options in ({"error_rate": 1.5}, {"latency_ms": -1}, {"rate_limit": 0}):
        with pytest.raises(ValueError):
            api.Emulator(**options)


# ---------------------------------------------------------------------------------------------------------
# Admin endpoints, state, counters


def test_admin_upsert_adds_and_replaces_objects():
    with server.start(
        [shapes.example("customer", id="cus_a", created=T0, email="old@example.com")]
    ) as running:
        client = client_for(running)
        status, _, body = http(
            running,
            "POST",
            "/_emulator/objects",
            body={
                "objects": [
                    {"object": "customer", "id": "cus_a", "created": T0, "email": "new@example.com"},
                    {"object": "customer", "id": "cus_b", "created": T0 + 1},
                ]
            },
        )
        assert status == 200 and body == {"upserted": 2}
        listed = raw(client, "/v1/customers")["data"]
    assert ids(listed) == ["cus_b", "cus_a"]
    assert listed[1]["email"] == "new@example.com"
    assert shapes.missing_keys(listed[0]) == set()


def test_admin_upsert_refuses_bad_bodies_and_stores_nothing(running):
    before = http(running, "GET", "/v1/customers?limit=100")[2]["data"]
    for body in (
        {"objects": [{"object": "customer", "id": "cus_new"}, {"id": "no_type"}]},
        {"nope": []},
        [1],
    ):
        status, _, error = http(running, "POST", "/_emulator/objects", body=body)
        assert status == 400 and error["error"]["type"] == "invalid_request_error"
    assert http(running, "GET", "/v1/customers?limit=100")[2]["data"] == before


def test_upsert_moves_an_object_when_its_created_or_fields_change():
    charges = [shapes.example("charge", id=f"ch_{i}", created=T0 + i, customer="cus_a") for i in range(5)]
    with server.start(charges) as running:
        running.emulator.upsert([{"object": "charge", "id": "ch_0", "created": T0 + 99, "customer": "cus_b"}])
        client = client_for(running)
        assert ids(raw(client, "/v1/charges")["data"]) == ["ch_0", "ch_4", "ch_3", "ch_2", "ch_1"]
        assert ids(raw(client, "/v1/charges", customer="cus_a")["data"]) == ["ch_4", "ch_3", "ch_2", "ch_1"]
        assert ids(raw(client, "/v1/charges", customer="cus_b")["data"]) == ["ch_0"]


def test_stats_count_requests_by_path_and_reset():
    with server.start([shapes.example("customer", id="cus_a", created=T0)]) as running:
        client = client_for(running)
        raw(client, "/v1/customers")
        raw(client, "/v1/customers")
        raw(client, "/v1/customers/cus_a")
        with pytest.raises(stripe.InvalidRequestError):
            raw(client, "/v1/nothing")
        status, _, stats = http(running, "GET", "/_emulator/stats")
        assert status == 200
        assert stats == {
            "requests": 4,
            "by_path": {"/v1/customers": 2, "/v1/customers/{id}": 1, "/v1/nothing": 1},
            "rate_limited": 0,
            "errors_injected": 0,
        }
        status, _, reset = http(running, "POST", "/_emulator/stats/reset")
        assert status == 200 and reset["requests"] == 0
        assert running.emulator.stats() == {
            "requests": 0,
            "by_path": {},
            "rate_limited": 0,
            "errors_injected": 0,
        }


def test_counters_are_exact_under_concurrent_clients():
    with server.start() as running:

        def work():
            client = client_for(running)
            for _ in range(25):
                raw(client, "/v1/charges")

        threads = [threading.Thread(target=work) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert running.emulator.stats()["requests"] == 200
        assert running.emulator.stats()["by_path"] == {"/v1/charges": 200}


def test_lists_stay_consistent_while_objects_are_upserted():
    emulator = api.Emulator()
    stop = threading.Event()
    failures = []

    def write():
        for batch in range(40):
            emulator.upsert(
                {"object": "charge", "id": f"ch_{batch:03d}_{i:03d}", "created": T0 + (batch * 37 + i) % 500}
                for i in range(100)
            )
        stop.set()

    def read():
        while not stop.is_set():
            response = emulator.handle(
                "GET", "/v1/charges?limit=100&created[gte]=1700000100", {"Authorization": f"Bearer {KEY}"}
            )
            page = json.loads(response.body)
            keys = [(c["created"], c["id"]) for c in page.get("data", [])]
            if response.status != 200 or keys != sorted(keys, reverse=True):
                failures.append(page)

    threads = [threading.Thread(target=write)] + [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert emulator.object_count == 4000


def test_upsert_refuses_objects_without_id_or_object_and_stores_none():
    emulator = api.Emulator()
    with pytest.raises(ValueError, match="object #1"):
        emulator.upsert([{"object": "charge", "id": "ch_1"}, {"object": "charge"}])
    assert emulator.object_count == 0


def test_twenty_thousand_objects_list_in_pages_of_100_each_exactly_once():
    # Speed is shown by the benchmark (make bench), not asserted here: these machines are shared.
    base = shapes.example("checkout.session")
    emulator = api.Emulator({**base, "id": f"cs_{i:06d}", "created": T0 + i // 4} for i in range(20_000))
    headers = {"Authorization": f"Bearer {KEY}"}
    after, pages, seen = "", 0, set()
    while True:
        page = json.loads(emulator.handle("GET", f"/v1/checkout/sessions?limit=100{after}", headers).body)
        pages += 1
        seen |= {o["id"] for o in page["data"]}
        if not page["has_more"]:
            break
        after = f"&starting_after={page['data'][-1]['id']}"
    assert pages == 200 and len(seen) == 20_000


# ---------------------------------------------------------------------------------------------------------
# Fixtures files, lifecycle


def test_load_fixtures_reads_objects(tmp_path):
    path = tmp_path / "fixtures.json"
    path.write_text(json.dumps({"objects": [{"object": "customer", "id": "cus_1"}]}))
    assert server.load_fixtures(path) == [{"object": "customer", "id": "cus_1"}]


@pytest.mark.parametrize(
    "content, reason",
    [
        (None, "not found"),
        ("{not json", "not valid JSON"),
        ('[{"object": "customer", "id": "cus_1"}]', '{"objects": [...]}'),
        ('{"objects": [{"object": "customer"}]}', "object #0"),
    ],
)
def test_load_fixtures_explains_bad_files_in_one_line(tmp_path, content, reason):
    path = tmp_path / "fixtures.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError) as caught:
        server.load_fixtures(path)
    message = str(caught.value)
    assert reason in message and str(path) in message and "\n" not in message


def test_stopped_emulator_stops_answering_pooled_connections():
    running = server.start()
    client = client_for(running)
    raw(client, "/v1/account")
    running.stop()
    running.stop()  # twice is fine
    with pytest.raises(stripe.APIConnectionError):
        raw(client, "/v1/account")


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_serve_forever_prints_its_address_and_stops_cleanly_on_signal(tmp_path, signum):
    code = (
        "from monitor.emulator import server, shapes\n"
        "server.serve_forever([shapes.example('customer', id='cus_1')], port=0)\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        ready, _, _ = select.select([process.stdout], [], [], 10)
        assert ready, "no startup line"
        line = process.stdout.readline()
        assert line.startswith("Stripe emulator listening on http://127.0.0.1:") and line.endswith(
            "(1 objects)\n"
        )
        base_url = line.split()[4]
        client = stripe.StripeClient(KEY, base_addresses={"api": base_url}, max_network_retries=0)
        assert raw(client, "/v1/customers/cus_1")["id"] == "cus_1"
        process.send_signal(signum)
        stdout, stderr = process.communicate(timeout=10)
    finally:
        process.kill()
    assert process.returncode == 0
    assert stderr == "" and stdout == ""
