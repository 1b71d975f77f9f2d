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
