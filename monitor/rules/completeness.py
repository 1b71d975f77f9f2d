"""How complete the Stripe snapshot is, and which judgements it cannot support. Pure; no I/O.

A resource that has never synced completely (a list Stripe refused, say to a restricted key without its
permission) leaves the snapshot unable to support some findings: those are not emitted, and the report
says which kinds were held back and why (DESIGN.md "Sync and the snapshot").

What each judgement needs, beyond the payments themselves:
- the events: every webhook kind (webhook_undelivered, webhook_failed, webhook_missing);
- the webhook endpoints: endpoint_misconfigured;
- refunds and disputes: whether a payment is settled, so refunded_but_active (whole kind); the other
  payment kinds that spare settled payments are held back payment by payment in monitor.rules.reconcile
  (only payments with a PaymentIntent can be refunded or disputed);
- the lists that link a row to its payment (checkout sessions, payment intents, invoices): a row naming
  an id that the missing list would resolve cannot be called unpaid (active_without_payment), nor can a
  payment of that row's customer be called unlinked (paid_without_subscription); monitor.rules.reconcile
  decides this row by row;
- subscriptions: Stripe's subscription status, so subscription_not_active of a subscription payment
  whose Stripe subscription is not stored, and active_without_payment of a row naming one.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import datetime

EVENTS, ENDPOINTS = "events", "webhook_endpoints"
# The lists the snapshot is made of, by the names the sync records them under (monitor.stripe_api.source's
# RESOURCES, which keeps to these names), and the endpoints, fetched whole on every run.
LISTS = (
    "customers",
    "checkout_sessions",
    "invoices",
    "payment_intents",
    "charges",
    "refunds",
    "disputes",
    "subscriptions",
    EVENTS,
)
SETTLEMENT = ("refunds", "disputes")
# The list that resolves each of a row's ids to a payment.
ROW_LINKS = {
    "checkout_session_id": "checkout_sessions",
    "payment_intent_id": "payment_intents",
    "stripe_subscription_id": "invoices",
}
SUBSCRIPTIONS = "subscriptions"
# Kinds held back as a whole while a resource they need is missing.
WHOLE_KINDS: dict[str, tuple[str, ...]] = {
    "webhook_undelivered": (EVENTS,),
    "webhook_failed": (EVENTS,),
    "webhook_missing": (EVENTS,),
    "endpoint_misconfigured": (ENDPOINTS,),
    "refunded_but_active": SETTLEMENT,
}


@dataclass(frozen=True)
class ResourceGap:
    """A resource the snapshot lacks or holds only as it was: its name and its latest error, if any."""

    resource: str
    error: str | None = None
    http_status: int | None = None
    permission: str | None = None  # what a restricted key lacks, when Stripe refused with 403
    failed_at: datetime | None = None

    def why(self) -> str:
        if self.permission:
            return f'the API key lacks the permission "{self.permission}"'
        return self.error or "it has not been synced yet"


@dataclass(frozen=True)
class SnapshotState:
    """What the store's snapshot holds: `missing` resources have never synced completely; `failing` ones
    did once but failed in their latest sync (they hold older data). `synced_at` is when a sync last
    brought something in whole."""

    synced_at: datetime | None = None
    missing: tuple[ResourceGap, ...] = ()
    failing: tuple[ResourceGap, ...] = ()

    @property
    def complete(self) -> bool:
        return not self.missing and not self.failing

    @property
    def missing_names(self) -> frozenset[str]:
        return frozenset(g.resource for g in self.missing)

    def gap(self, resource: str) -> ResourceGap | None:
        return next((g for g in self.missing if g.resource == resource), None)


@dataclass
class HeldBack:
    """Kinds not judged, or judged only in part, with why: kind -> reason (one line)."""

    reasons: dict[str, str] = field(default_factory=dict)
    keys: set[str] = field(default_factory=set)  # identity keys of the findings not judged

    def add(self, kind: str, reason: str, keys: Iterable[str] = ()) -> None:
        if kind not in self.reasons:
            self.reasons[kind] = reason
        self.keys.update(keys)

    def update(self, other: HeldBack) -> None:
        for kind, reason in other.reasons.items():
            self.add(kind, reason)
        self.keys |= other.keys

    @property
    def kinds(self) -> list[str]:
        return sorted(self.reasons)


def whole_kinds_held_back(state: SnapshotState, kinds: Iterable[str]) -> HeldBack:
    """The kinds among `kinds` that cannot be judged at all on this snapshot (WHOLE_KINDS)."""
    held = HeldBack()
    for kind in kinds:
        for resource in WHOLE_KINDS.get(kind, ()):
            gap = state.gap(resource)
            if gap is not None:
                held.add(kind, f"{resource} never synced completely: {gap.why()}")
    return held


def reason(state: SnapshotState, resources: Collection[str], what: str) -> str:
    """One line: `what` could not be judged because these missing resources never synced."""
    gaps = [g for g in state.missing if g.resource in resources]
    names = ", ".join(f"{g.resource} ({g.why()})" for g in gaps)
    return f"{what}: {names} never synced completely"


def snapshot_json(state: SnapshotState, held: HeldBack, *, iso) -> dict:
    """DESIGN.md's `summary.snapshot`, plus the reasons and the resources failing in their latest sync."""

    def gap(g: ResourceGap) -> dict:
        return {
            "resource": g.resource,
            "error": g.error,
            "http_status": g.http_status,
            "permission": g.permission,
            "failed_at": iso(g.failed_at) if g.failed_at else None,
        }

    return {
        "complete": state.complete,
        "synced_at": iso(state.synced_at) if state.synced_at else None,
        "missing": [gap(g) for g in state.missing],
        "failing": [gap(g) for g in state.failing],
        "held_back": held.kinds,
        "held_back_reasons": dict(sorted(held.reasons.items())),
    }
