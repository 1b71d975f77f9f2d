"""Activation repair: the one function every path that activates a subscription calls (the dashboard's
button, the CLI, any future automatic repair). DESIGN.md "Activation repair", in order:

1. Re-fetch the payment from Stripe now; refuse unless paid, not fully refunded, not disputed, and the
   amount matches what the row will say. Stripe unreachable is a refusal: never guess from the snapshot.
2. Claim the repair in the monitor's store (monitor.store.claims): one claim per payment; a second click waits
   for the first and then finds the row active. "The payment" is its canonical id (the `payment_id` of its
   row in the store's `payments` table), whichever of its ids, `cs_`, `in_` or `pi_`, was given:
   `payment_state.canonical_id` decides from what Stripe says now and what the store holds, and the live
   state acted on is the canonical payment's (issue 14: a session and its intent repaired at once took two
   claims and two locks, and made two rows).
3. In one app-database transaction serialized for the payment (PostgreSQL advisory lock on the canonical
   id, SQLite BEGIN IMMEDIATE) re-read the rows for any of the payment's ids: an active one means done, a
   pending one is activated, none means one is created from the Stripe data. The check and the write are
   in that one transaction, never apart.
4. Strategy `webhook` instead re-sends the original event, fetched from Stripe, to the app's webhook URL
   signed with WEBHOOK_SECRET, and waits (bounded) for the row to appear.
5. Add a ledger row (`repairs`, only ever added to): the payment (`payment_id`, canonical) and the id
   given (`requested_id`), operator, role, time, strategy, the Stripe state seen, the rows before and
   after, the outcome and its reason. Refusals and failures too.

The operator's role is checked here, at every call, not only by hiding buttons.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, bindparam, insert, or_, select, text

from monitor import store
from monitor.app_db import AppDatabase, load_mapping
from monitor.config import Config
from monitor.errors import BadInput, MonitorError, StripeError, StripeRequestError
from monitor.rules.money import format_money
from monitor.store import claims
from monitor.store.models import RepairRecord, now_utc
from monitor.stripe_api import webhook_replay
from monitor.stripe_api.payment_state import PaymentState, canonical_id, fetch_payment_state, kind_of
from monitor.stripe_api.source import StripeSource

ACTIVATING_ROLES = ("support", "admin")
STRATEGIES = ("db", "webhook")
DONE = ("activated", "created", "already_active", "planned")
# Disputes settled with the merchant keeping the money (Stripe's dispute statuses); any other is open or lost.
SETTLED_FOR_MERCHANT = ("won", "warning_closed")
WEBHOOK_WAIT_S = 30.0
_PAYMENT_ID = re.compile(r"(cs|in|pi)_[A-Za-z0-9_]{1,250}")


class Refused(MonitorError):
    """The repair must not happen; the message says why."""


@dataclass
class RepairResult:
    payment_id: str  # the payment's canonical id (payment_state.canonical_id), once known
    operator: str
    role: str | None
    strategy: str
    dry_run: bool
    outcome: str  # activated | created | already_active | planned | refused | failed | in_progress
    reason: str
    stripe_state: dict | None = None
    rows_before: list[dict] = field(default_factory=list)
    rows_after: list[dict] = field(default_factory=list)
    plan: dict | None = None
    ledger_id: int | None = None
    requested_id: str = ""  # the id as given (cs_, in_ or pi_)

    @property
    def ok(self) -> bool:
        return self.outcome in DONE

    @property
    def exit_status(self) -> int:
        return 0 if self.ok else 1


def role_of(config: Config, operator: str) -> str | None:
    """The operator's role from OPERATOR_ROLES; in demo mode without it, everyone is admin."""
    if config.operator_roles:
        return config.operator_roles.get(operator.strip().lower())
    return "admin" if config.demo else None


def may_activate(config: Config, operator: str) -> bool:
    return role_of(config, operator) in ACTIVATING_ROLES


def activate(
    config: Config,
    payment_id: str,
    operator: str,
    *,
    strategy: str = "db",
    dry_run: bool = False,
    engine: Engine | None = None,
    app: AppDatabase | None = None,
    source: Callable | None = None,
) -> RepairResult:
    """Give the customer of `payment_id` their subscription, once, or say why not. Every call adds a
    ledger row. Raises BadInput for a malformed request (nothing is recorded then)."""
    from monitor import pipeline

    payment_id, operator = (payment_id or "").strip(), (operator or "").strip()
    if not _PAYMENT_ID.fullmatch(payment_id):
        raise BadInput(
            f"{payment_id!r} is not a Checkout Session (cs_…), invoice (in_…) or PaymentIntent (pi_…) id"
        )
    if not operator:
        raise BadInput("an operator is required (who is doing this?)")
    if strategy not in STRATEGIES:
        raise BadInput(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
    if strategy == "webhook" and not (config.expected_webhook_url and config.webhook_secret):
        raise BadInput("the webhook strategy needs EXPECTED_WEBHOOK_URL and WEBHOOK_SECRET")
    if strategy == "db" and not (app.mapping if app else load_mapping(config.app_schema)).repair:
        # Said before anything is fetched or claimed (the djstripe preset: never write dj-stripe's tables).
        raise BadInput(
            f"APP_SCHEMA={config.app_schema} has no [repair] SQL, so the db strategy cannot write the row: "
            "use --strategy webhook (re-send the event to the app's endpoint)"
        )

    own_engine, own_app = engine is None, app is None  # what is opened here is disposed here
    engine = engine or store.open_store(config.monitor_database_url)
    role = role_of(config, operator)
    result = RepairResult(
        payment_id, operator, role, strategy, dry_run, "refused", "", requested_id=payment_id
    )
    started = now_utc()
    try:
        # The store's answer first, so that a refusal before Stripe is asked still names the payment.
        result.payment_id = canonical_id(payment_id, stored_payment_ids(engine, [payment_id]))
        if role not in ACTIVATING_ROLES:
            raise Refused(
                f"{operator} may not activate subscriptions "
                f"({'role ' + role if role else 'not in OPERATOR_ROLES'}; support or admin may)"
            )
        app = app or pipeline.open_app_database(config)
        with (source or pipeline.stripe_source)(config) as stripe:
            state = _payment_state(engine, stripe, payment_id)
            result.payment_id, result.stripe_state = state.payment_id, state.to_json()
            _refuse_unless_payable(state)
            if dry_run:
                _plan(app, state, result)
            elif strategy == "db":
                _claimed(engine, state.payment_id, operator, lambda: _apply_in_app(app, state, result))
            else:
                _claimed(
                    engine,
                    state.payment_id,
                    operator,
                    lambda: _replay(config, engine, app, stripe, state, result),
                )
    except Refused as e:
        result.outcome, result.reason = "refused", str(e)
    except claims.ClaimBusy as e:
        result.outcome, result.reason = "in_progress", str(e)
    except MonitorError as e:
        result.outcome, result.reason = "failed", config.mask(str(e))
    finally:
        if own_app and app is not None:
            app.dispose()
    if result.requested_id != result.payment_id:
        result.reason += f" ({result.requested_id} is part of payment {result.payment_id})"
    try:
        result.ledger_id = _record(engine, result, started)
    finally:
        if own_engine:
            engine.dispose()
    return result


def _payment_state(engine: Engine, stripe: StripeSource, payment_id: str) -> PaymentState:
    """What Stripe says now of the payment `payment_id` is one of the ids of: of the canonical payment, which
    is fetched too when another of its ids was given, so every id of a payment is checked and acted on
    alike (its amount, every intent's refunds and disputes, the row it would create)."""
    given = _live_state(stripe, payment_id)
    canonical = canonical_id(payment_id, [*given.ids(), *stored_payment_ids(engine, given.ids())])
    return given if canonical == given.payment_id else _live_state(stripe, canonical)


_STORED = text(
    # Rows whose payment_id, checkout_session_id, payment_intent_id or invoice_id is one of :ids, each through
    # an index: a session's row has its own id as payment_id, and its invoice is found on the session.
    """SELECT payment_id FROM payments WHERE payment_id IN :ids OR payment_intent_id IN :ids
    OR payment_id IN (SELECT s.id FROM stripe_checkout_sessions s WHERE s.invoice_id IN :ids)"""
).bindparams(bindparam("ids", expanding=True))
_PAID_INVOICES = text(
    "SELECT invoice_id FROM stripe_invoice_payments WHERE payment_intent_id IN :ids AND invoice_id IS NOT NULL"
).bindparams(bindparam("ids", expanding=True))


def stored_payment_ids(engine: Engine, ids: list[str]) -> list[str]:
    """The `payment_id` of each row of the store's `payments` table that is, or names, one of `ids` (any
    intent of an invoice counts: `stripe_invoice_payments`, not only the one the row names)."""
    with engine.connect() as conn:
        invoices = conn.execute(_PAID_INVOICES, {"ids": ids}).scalars().all()
        return sorted(set(conn.execute(_STORED, {"ids": [*ids, *invoices]}).scalars()))


def _live_state(stripe: StripeSource, payment_id: str) -> PaymentState:
    try:
        return fetch_payment_state(stripe, payment_id)
    except StripeRequestError as e:
        if "No such" in str(e) or "(404)" in str(e):
            raise Refused(f"unknown payment id: Stripe has no {kind_of(payment_id)} {payment_id}") from None
        raise Refused(f"Stripe refused to show {payment_id}: {e}") from None
    except StripeError as e:
        raise Refused(
            f"Stripe unreachable, so nothing was changed (never guessed from the snapshot): {e}"
        ) from None


def _refuse_unless_payable(state: PaymentState) -> None:
    money = format_money(state.amount, state.currency)
    if not state.paid:
        raise Refused(f"{state.payment_id} is not paid (Stripe says {state.status})")
    if state.fully_refunded:
        raise Refused(
            f"{state.payment_id} was refunded in full ({format_money(state.amount_refunded, state.currency)} of {money})"
        )
    if any(d not in SETTLED_FOR_MERCHANT for d in state.disputes):
        raise Refused(
            f"{state.payment_id} is disputed ({', '.join(state.disputes)}): settle the dispute first"
        )
    if state.amount is None or not state.currency:
        raise Refused(f"Stripe shows no amount for {state.payment_id}")


def _claimed(engine: Engine, payment_id: str, operator: str, work: Callable[[], None]) -> None:
    token = claims.take(engine, payment_id, operator)
    outcome = "failed"
    try:
        work()
        outcome = "done"
    finally:
        claims.release(engine, payment_id, token, outcome)


def _rows_for(app: AppDatabase, conn, state: PaymentState) -> pd.DataFrame:
    """The app's rows for any of the payment's ids: its session, any of its intents, its subscription."""
    intents = list(dict.fromkeys(i for i in [state.payment_intent_id, *state.payment_intent_ids] if i))
    found = [
        app.rows_for_payment(
            conn,
            checkout_session_id=state.checkout_session_id,
            payment_intent_id=next(iter(intents), None),
            stripe_subscription_id=state.stripe_subscription_id,
        )
    ]
    found += [app.rows_for_payment(conn, payment_intent_id=pi) for pi in intents[1:]]
    found = [rows for rows in found if not rows.empty] or found[:1]
    if len(found) == 1:
        return found[0]
    return pd.concat(found).drop_duplicates("id").sort_values("id").reset_index(drop=True)


def _is_active(app: AppDatabase, rows: pd.DataFrame) -> pd.Series:
    active = {s.lower() for s in app.mapping.active_statuses}
    return rows["status"].map(lambda s: isinstance(s, str) and s.lower() in active).astype(bool)


def _decide(app: AppDatabase, state: PaymentState, rows: pd.DataFrame) -> tuple[str, dict | None]:
    """('none' | 'activate' | 'create', the row to activate or the values to create), or Refused."""
    if _is_active(app, rows).any():
        return "none", None
    if not rows.empty:
        row = rows.sort_values(["created_at", "id"], na_position="first").iloc[-1]
        amount, currency = row["amount"], row["currency"]
        if (
            pd.notna(amount)
            and int(amount) != state.amount
            or (isinstance(currency, str) and currency.lower() != state.currency)
        ):
            raise Refused(
                f"row {row['id']} says {format_money(None if pd.isna(amount) else int(amount), currency or state.currency)}"
                f" but Stripe was paid {format_money(state.amount, state.currency)}: fix the row, then activate"
            )
        return "activate", {"id": _plain(row["id"]), "status": row["status"]}
    values = {
        "email": state.email,
        "customer_id": state.customer_id,
        "checkout_session_id": state.checkout_session_id,
        "payment_intent_id": state.payment_intent_id,
        "stripe_subscription_id": state.stripe_subscription_id,
        "amount": state.amount,
        "currency": state.currency,
    }
    if not state.email:
        raise Refused(f"Stripe has no e-mail for the customer of {state.payment_id}, and the row needs one")
    return "create", values


def _plan(app: AppDatabase, state: PaymentState, result: RepairResult) -> None:
    with app.engine.connect() as conn:
        rows = _rows_for(app, conn, state)
    action, values = _decide(app, state, rows)
    result.rows_before = result.rows_after = _json_rows(rows)
    result.plan = {"action": action, "row": values}
    result.outcome = "planned"
    result.reason = {
        "none": "nothing to do: a row for this payment is already active",
        "activate": f"would activate row {values and values.get('id')} (status {values and values.get('status')} -> active)",
        "create": "would create an active row from the Stripe data",
    }[action]


def _apply_in_app(app: AppDatabase, state: PaymentState, result: RepairResult) -> None:
    now = now_utc()
    # `state` is the canonical payment's (_payment_state), so this is the payment's lock whichever id was given.
    with app.serialized(state.payment_id) as conn:
        before = _rows_for(app, conn, state)
        action, values = _decide(app, state, before)
        if action == "activate":
            app.activate_row(conn, values["id"], now)
        elif action == "create":
            app.create_row(conn, values, now)
        after = _rows_for(app, conn, state)
        if action != "none" and not _is_active(app, after).any():
            raise MonitorError(
                f"the mapping's [repair] {action} SQL ran, but no row for {state.payment_id} is active "
                "afterwards; nothing was changed"
            )
    result.rows_before, result.rows_after = _json_rows(before), _json_rows(after)
    result.plan = {"action": action, "row": values}
    result.outcome = {"none": "already_active", "activate": "activated", "create": "created"}[action]
    result.reason = {
        "none": "already active: a row for this payment is active; nothing changed",
        "activate": f"activated row {values and values.get('id')}",
        "create": "created an active row from the Stripe data",
    }[action]


def _replay(
    config: Config,
    engine: Engine,
    app: AppDatabase,
    stripe: StripeSource,
    state: PaymentState,
    result: RepairResult,
) -> None:
    with app.engine.connect() as conn:
        before = _rows_for(app, conn, state)
    result.rows_before = _json_rows(before)
    if _is_active(app, before).any():
        result.rows_after = result.rows_before
        result.outcome, result.reason = "already_active", "already active: nothing was re-sent"
        return
    event_id = _announcing_event(engine, state.payment_id)
    if event_id is None:
        raise MonitorError(
            f"no event announcing {state.payment_id} is in the store: sync first, or use --strategy db"
        )
    event = stripe.retrieve("event", event_id)
    status, said = webhook_replay.send_event(config.expected_webhook_url, config.webhook_secret, event)
    if status is None or not 200 <= status < 300:
        raise MonitorError(f"re-sent {event.get('type')} {event_id}, but {said}")
    deadline = time.monotonic() + WEBHOOK_WAIT_S
    while True:
        with app.engine.connect() as conn:
            after = _rows_for(app, conn, state)
        if _is_active(app, after).any() or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    result.rows_after = _json_rows(after)
    if not _is_active(app, after).any():
        raise MonitorError(
            f"re-sent {event_id} ({said}), but no active row appeared within {WEBHOOK_WAIT_S:.0f} s"
        )
    result.outcome, result.reason = (
        "activated",
        f"re-sent {event.get('type')} {event_id}: {said}; the row is active",
    )


def _announcing_event(engine: Engine, payment_id: str) -> str | None:
    from monitor.store.payment_table import PAYMENT_EVENT_TYPES

    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, type FROM stripe_events WHERE object_id = :p ORDER BY created"),
            {"p": payment_id},
        ).all()
    ranked = sorted((PAYMENT_EVENT_TYPES.index(t), i) for i, t in rows if t in PAYMENT_EVENT_TYPES)
    return ranked[0][1] if ranked else None


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _json_rows(rows: pd.DataFrame) -> list[dict]:
    out = []
    for record in rows.to_dict("records"):
        out.append(
            {
                k: (
                    None
                    if v is None or (not isinstance(v, str) and pd.isna(v))
                    else v.isoformat()
                    if isinstance(v, datetime)
                    else _plain(v)
                )
                for k, v in record.items()
            }
        )
    return out


def _record(engine: Engine, result: RepairResult, started: datetime) -> int:
    with engine.begin() as conn:
        return conn.execute(
            insert(RepairRecord)
            .values(
                payment_id=result.payment_id,
                requested_id=result.requested_id,
                operator=result.operator,
                role=result.role,
                strategy=result.strategy,
                dry_run=result.dry_run,
                outcome=result.outcome,
                reason=result.reason,
                stripe_state=json.dumps(result.stripe_state) if result.stripe_state else None,
                rows_before=json.dumps(result.rows_before),
                rows_after=json.dumps(result.rows_after),
                started_at=started,
                finished_at=now_utc(),
            )
            .returning(RepairRecord.id)
        ).scalar_one()


def ledger(engine: Engine, payment_id: str | None = None, limit: int = 200) -> list:
    """Ledger rows, newest first; with `payment_id`, those of that payment or given that id."""
    t = RepairRecord.__table__
    q = select(t).order_by(t.c.id.desc()).limit(limit)
    if payment_id:
        q = q.where(or_(t.c.payment_id == payment_id, t.c.requested_id == payment_id))
    with engine.connect() as conn:
        return conn.execute(q).all()
