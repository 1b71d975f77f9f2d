"""StripeSource's seam: each of Stripe's answers, through the real stripe SDK against the emulator, becomes
the project's own error carrying Stripe's HTTP status and error code, so callers read the structure and
never the message."""

from __future__ import annotations

import time

import pytest

from monitor.emulator import server
from monitor.errors import StripeAuthError, StripePermissionError, StripeRequestError, StripeUnavailable
from monitor.stripe_api.source import StripeSource
from tests.services import free_port
from tests.stripe_cast import Account

KEY = "sk_test_source"
FORBIDDEN = "rk_test_source_forbidden"


def account_objects() -> list[dict]:
    a = Account(int(time.time()))
    a.checkout_payment("paid_and_active@example.com")
    return a.objects


def no_wait(_seconds: float) -> None:
    pass


@pytest.mark.parametrize(
    "key, call, error, http_status, code",
    [
        (KEY, "missing", StripeRequestError, 404, "resource_missing"),
        (KEY, "bad_cursor", StripeRequestError, 400, "resource_missing"),
        ("sk_test_not_the_key", "account", StripeAuthError, 401, None),
        (FORBIDDEN, "account", StripePermissionError, 403, None),
        (KEY, "rate_limited", StripeUnavailable, 429, "rate_limit"),  # after its retries
    ],
)
def test_stripes_answer_keeps_its_status_and_code(key, call, error, http_status, code):
    rate_limit = 0.01 if call == "rate_limited" else None  # one request, then 429 for the rest of the test
    with server.start(
        account_objects(), api_key=KEY, forbidden_keys=[FORBIDDEN], rate_limit=rate_limit
    ) as running:
        caught = answer_to(StripeSource(key, running.base_url, sleep=no_wait), call, error)
    assert type(caught) is error
    assert (caught.http_status, caught.code) == (http_status, code)


def answer_to(source: StripeSource, call: str, error: type[Exception]) -> Exception:
    requests = {
        "missing": lambda: source.retrieve("checkout.session", "cs_test_GoneFromStripe"),
        "bad_cursor": lambda: source.get("/v1/customers", starting_after="cus_GoneFromStripe"),
        "account": source.account,
        "rate_limited": lambda: [source.account() for _ in range(3)],
    }
    with pytest.raises(error) as caught:
        requests[call]()
    return caught.value


def test_no_answer_is_unavailable_with_no_status_and_no_code():
    source = StripeSource(KEY, f"http://127.0.0.1:{free_port()}", max_network_retries=0)
    with pytest.raises(StripeUnavailable) as caught:
        source.account()
    assert (caught.value.http_status, caught.value.code) == (None, None)
