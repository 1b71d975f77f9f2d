"""What a finding is: its kinds, severities and stable identity. Pure; no I/O."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from datetime import datetime

CRITICAL = "critical"
WARNING = "warning"

# kind -> (severity, what it means); the table of DESIGN.md "Finding kinds".
KINDS: dict[str, tuple[str, str]] = {
    "paid_without_subscription": (CRITICAL, "a payment older than the grace period has no subscription row"),
    "subscription_not_active": (CRITICAL, "a paid payment's subscription row is not in an active status"),
    "period_not_extended": (
        WARNING,
        "a paid renewal invoice's period is not reflected in the row's current_period_end",
    ),
    "amount_mismatch": (WARNING, "amount or currency paid differs from the row"),
    "duplicate_subscription": (
        WARNING,
        "more than one active row for one payment or one Stripe subscription",
    ),
    "active_without_payment": (WARNING, "an active row with no paid payment behind it"),
    "refunded_but_active": (WARNING, "fully refunded, or dispute lost, and the row is still active"),
    "webhook_undelivered": (
        CRITICAL,
        "a payment-related event still has pending_webhooks > 0 after the grace period",
    ),
    "webhook_failed": (CRITICAL, "the app's webhook log records a failure for an event and no later success"),
    "webhook_missing": (
        WARNING,
        "Stripe reports the event delivered, but the app's log has no record of it (delivered elsewhere)",
    ),
    "endpoint_misconfigured": (
        CRITICAL,
        "no enabled endpoint at EXPECTED_WEBHOOK_URL receiving the required event types, "
        "or a test/live mismatch",
    ),
}

PAYMENT_KINDS: tuple[str, ...] = (
    "paid_without_subscription",
    "subscription_not_active",
    "period_not_extended",
    "amount_mismatch",
    "duplicate_subscription",
    "active_without_payment",
    "refunded_but_active",
)
WEBHOOK_KINDS: tuple[str, ...] = (
    "webhook_undelivered",
    "webhook_failed",
    "webhook_missing",
    "endpoint_misconfigured",
)


# Money taken with no access given: what "amount at risk" adds up.
AT_RISK_KINDS = ("paid_without_subscription", "subscription_not_active")
# The one definition of parity, shown wherever a parity number is (the Overview, the Finance page), and what
# each counts: reconcile's summary (monitor.rules.reconcile), and Finance from the payments that reconcile
# found not matching (monitor.views.finance).
PARITY_DEFINITION = (
    "Parity: the share of Stripe payments whose access in the app matches the money, as of the latest "
    "reconcile. A paid payment matches when the app has an active subscription row for it; a payment "
    "refunded in full, or whose dispute was lost, matches when it has none. So a payment still within the "
    "grace period without its row, and one whose subscription has since been canceled, do not match. "
    "Payments are counted by number, all in UTC; with PAYMENT_SCOPE=subscriptions only payments of a "
    "Stripe subscription count."
)


def amount_at_risk(findings) -> dict[str, int]:
    """Minor units per currency over findings (dicts with kind, amount, currency) of AT_RISK_KINDS."""
    risk: dict[str, int] = {}
    for f in findings:
        if f["kind"] in AT_RISK_KINDS and f.get("currency") and f.get("amount") is not None:
            risk[f["currency"]] = risk.get(f["currency"], 0) + int(f["amount"])
    return risk


def severity_of(kind: str) -> str:
    return KINDS[kind][0]


def finding_id(key: str) -> str:
    """A short stable id derived from a finding's identity key."""
    return hashlib.sha256(key.encode()).hexdigest()[:16]


@dataclass
class Finding:
    """One discrepancy. `key` is its stable identity: the kind plus the objects it is about.

    Fields that do not apply are None or []. `occurred_at` is when the thing it is about happened
    (the payment's time, the row's creation), used to line it up with outages.
    """

    kind: str
    key: str
    payment_id: str | None = None
    payment_intent_id: str | None = None
    customer_id: str | None = None
    customer_email: str | None = None
    amount: int | None = None
    currency: str | None = None
    subscription_ids: list = field(default_factory=list)
    event_id: str | None = None
    hint: str = ""
    occurred_at: datetime | None = None

    @property
    def severity(self) -> str:
        return severity_of(self.kind)

    @property
    def id(self) -> str:
        return finding_id(self.key)

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self)}  # asdict() deep-copies: slow in bulk
        d["subscription_ids"] = list(self.subscription_ids)
        d["severity"] = self.severity
        d["id"] = self.id
        return d
