"""Stripe objects shaped like Stripe's own published examples.

`stripe_examples.json` is `openapi/fixtures3.json` from github.com/stripe/openapi (MIT licence,
Copyright (c) 2011- Stripe, Inc.): one example of every API resource, exactly as the API returns it.
Every object the emulator serves starts as a deep copy of the example of its type, with the fields of
the case written over it, so it carries every key a real client may read.
"""

import copy
import json
from functools import cache
from pathlib import Path

EXAMPLES_PATH = Path(__file__).with_name("stripe_examples.json")

# The `object` value of each type the emulator serves, mapped to its resource name in the examples.
RESOURCE_OF_OBJECT = {
    "checkout.session": "checkout.session",
    "payment_intent": "payment_intent",
    "charge": "charge",
    "refund": "refund",
    "dispute": "dispute",
    "customer": "customer",
    "subscription": "subscription",
    "invoice": "invoice",
    "event": "event",
    "webhook_endpoint": "webhook_endpoint",
    "account": "account",
}


@cache
def examples() -> dict[str, dict]:
    """Stripe's example object of every resource, by resource name (`checkout.session`, `invoice`, …)."""
    return json.loads(EXAMPLES_PATH.read_text())["resources"]


def example(resource: str, **fields) -> dict:
    """A deep copy of Stripe's example `resource` with `fields` written over it."""
    obj = copy.deepcopy(examples()[resource])
    obj.update(fields)
    return obj


def missing_keys(obj: dict) -> set[str]:
    """The keys of Stripe's example of `obj`'s type that `obj` lacks (empty for a well-shaped object)."""
    resource = RESOURCE_OF_OBJECT.get(obj.get("object", ""))
    if resource is None:
        return set()
    return set(examples()[resource]) - set(obj)


# --- the objects of a paid payment, in test mode ------------------------------------------------------
# The demo, the tests' cast and the benchmarks all start from these; each writes its case's fields over them.


def paid_session(**fields) -> dict:
    """A complete, paid test-mode Checkout Session: a one-time payment in usd, with no customer,
    PaymentIntent, subscription or invoice until `fields` (written over it) name them."""
    return example(
        "checkout.session",
        **{
            "status": "complete",
            "payment_status": "paid",
            "mode": "payment",
            "currency": "usd",
            "customer": None,
            "customer_email": None,
            "payment_intent": None,
            "subscription": None,
            "invoice": None,
            "livemode": False,
            **fields,
        },
    )


def session_customer_details(**fields) -> dict:
    """A copy of the example Checkout Session's `customer_details` with `fields` (email, name) over it."""
    return dict(copy.deepcopy(examples()["checkout.session"]["customer_details"]), **fields)


def paid_intent(amount: int, charge: str, **fields) -> dict:
    """A test-mode PaymentIntent that took `amount` (usd) by the charge `charge`, with `fields` over it."""
    return example(
        "payment_intent",
        **{
            "amount": amount,
            "amount_received": amount,
            "currency": "usd",
            "status": "succeeded",
            "latest_charge": charge,
            "livemode": False,
            **fields,
        },
    )


def paid_charge(amount: int, intent: str, **fields) -> dict:
    """A succeeded, captured test-mode Charge of `amount` (usd) for the PaymentIntent `intent`, not
    refunded or disputed, with `fields` written over it."""
    return example(
        "charge",
        **{
            "amount": amount,
            "amount_refunded": 0,
            "refunded": False,
            "disputed": False,
            "paid": True,
            "captured": True,
            "status": "succeeded",
            "currency": "usd",
            "payment_intent": intent,
            "livemode": False,
            **fields,
        },
    )
