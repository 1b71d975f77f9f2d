"""Activation repair: the one function every path that activates a subscription calls (the dashboard's
button, the CLI, any future automatic repair). In order:

1. Re-fetch the payment from Stripe now; refuse unless paid, not fully refunded, not disputed, and the
   amount matches what the row will say. Stripe unreachable is a refusal: never guess from the snapshot.
2. Claim the repair in the monitor's store (monitor.store.claims): one claim per payment; a second click waits
   for the first and then finds the row active. "The payment" is its canonical id (the `payment_id` of its
   row in the store's `payments` table), whichever of its ids, `cs_`, `in_` or `pi_`, was given:
   `payment_state.canonical_id` decides from what Stripe says now and what the store holds, and the live
   state acted on is the canonical payment's, so that a session and its intent repaired at once take one
   claim and one lock, and make one row.
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

import contextlib
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import pandas as pd
from sqlalchemy import Engine, bindparam, insert, or_, select, text

from monitor import demo, store
from monitor.app_db import AppDatabase, load_mapping
from monitor.clock import now_utc
from monitor.config import Config
from monitor.errors import BadInput, MonitorError, StripeError, StripeRequestError
from monitor.rules.money import format_money
from monitor.store import claims
from monitor.store.models import RepairRecord
from monitor.stripe_api import webhook_replay
from monitor.stripe_api.payment_state import PaymentState, canonical_id, fetch_payment_state, kind_of
from monitor.stripe_api.source import StripeSource

ACTIVATING_ROLES = ("support", "admin")
STRATEGIES = ("db", "webhook")
# Disputes settled with the merchant keeping the money (Stripe's dispute statuses); any other is open or lost.
SETTLED_FOR_MERCHANT = ("won", "warning_closed")
WEBHOOK_WAIT_S = 30.0
_PAYMENT_ID = re.compile(r"(cs|in|pi)_[A-Za-z0-9_]{1,250}")


class Refused(MonitorError):
    """The repair must not happen; the message says why."""


# --- outcomes ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Outcome:
    """What one outcome of a repair means. `done`: the payment's customer has an active row (for a dry run:
    the plan was made). The reasons are templates, one per way of ending here: `applied` by the db
    strategy and `planned` by a dry run (both formatted with the row `_decide` chose: {id}, {status}),
    `resent` by the webhook strategy ({event_type}, {event_id}, {said}). Other outcomes carry the message
    of what stopped the repair."""

    done: bool
    label: str  # the outcome in one or two capitalized words, as the command line prints it
    action: str | None = None  # the decision of `_decide` that ends here: none | activate | create
    applied: str = ""
    planned: str = ""
    resent: str = ""

    @property
    def exit_status(self) -> int:
        """The command's exit status: 0 when done, else 1 (bad input, 2, never gets as far as an outcome)."""
        return 0 if self.done else 1


OUTCOMES: dict[str, Outcome] = {
    "activated": Outcome(
        True,
        "ACTIVATED",
        "activate",
        applied="activated row {id}",
        planned="would activate row {id} (status {status} -> active)",
        resent="re-sent {event_type} {event_id}: {said}; the row is active",
    ),
    "created": Outcome(
        True,
        "CREATED",
        "create",
        applied="created an active row from the Stripe data",
        planned="would create an active row from the Stripe data",
    ),
    "already_active": Outcome(
        True,
        "ALREADY ACTIVE",
        "none",
        applied="already active: a row for this payment is active; nothing changed",
        planned="nothing to do: a row for this payment is already active",
        resent="already active: nothing was re-sent",
    ),
    "planned": Outcome(True, "DRY RUN"),
    "refused": Outcome(False, "REFUSED"),
    "failed": Outcome(False, "FAILED"),
    "in_progress": Outcome(False, "IN PROGRESS"),
}
_OUTCOME_OF_ACTION = {o.action: name for name, o in OUTCOMES.items() if o.action}


@dataclass
class RepairResult:
    payment_id: str  # the payment's canonical id (payment_state.canonical_id), once known
    operator: str
    role: str | None
    strategy: str
    dry_run: bool
    outcome: str  # a key of OUTCOMES
    reason: str
    stripe_state: dict | None = None
    rows_before: list[dict] = field(default_factory=list)
    rows_after: list[dict] = field(default_factory=list)
    plan: dict | None = None
    ledger_id: int | None = None
    requested_id: str = ""  # the id as given (cs_, in_ or pi_)

    @property
    def ok(self) -> bool:
        return OUTCOMES[self.outcome].done

    @property
    def exit_status(self) -> int:
        return OUTCOMES[self.outcome].exit_status


# --- who may, and what may be asked --------------------------------------------------------------------


def role_of(config: Config, operator: str) -> str | None:
    """The operator's role from OPERATOR_ROLES; in demo mode without it, everyone is admin."""
    if config.operator_roles:
        return config.operator_roles.get(operator.strip().lower())
    return demo.everyone_role(config)


def may_activate(config: Config, operator: str) -> bool:
    return role_of(config, operator) in ACTIVATING_ROLES


def _validated(
    config: Config, payment_id: str, operator: str, strategy: str, app: AppDatabase | None
) -> tuple[str, str]:
    """The payment id and the operator, stripped; BadInput for a request that cannot be done as asked."""
    payment_id, operator = (payment_id or "").strip(), (operator or "").strip()
    if not _PAYMENT_ID.fullmatch(payment_id):
        raise BadInput(
            f"{payment_id!r} is not a Checkout Session (cs_…), invoice (in_…) or PaymentIntent (pi_…) id"
        )
    if not operator:
        raise BadInput("an operator is required (who is doing this?)")
    _check_strategy(config, strategy, app)
    return payment_id, operator


def _check_strategy(config: Config, strategy: str, app: AppDatabase | None) -> None:
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


def _refuse_unless_allowed(operator: str, role: str | None) -> None:
    if role not in ACTIVATING_ROLES:
        raise Refused(
            f"{operator} may not activate subscriptions "
            f"({'role ' + role if role else 'not in OPERATOR_ROLES'}; support or admin may)"
        )


# --- one repair ----------------------------------------------------------------------------------------


class RepairContext:
    """The connections of one repair: the monitor's store, the app's database and Stripe. What it opens it
    closes when its `with` ends, last opened first closed; what it was given stays open. The app's database
    and Stripe open at first use, so a refusal before they are needed opens neither."""

    def __init__(
        self,
        config: Config,
        *,
        engine: Engine | None = None,
        app: AppDatabase | None = None,
        source: Callable | None = None,
    ):
        self.config = config
        self._engine, self._app, self._source = engine, app, source
        self._stripe: StripeSource | None = None
        self._opened = contextlib.ExitStack()

    def __enter__(self) -> RepairContext:
        if self._engine is None:
            self._engine = store.open_store(self.config.monitor_database_url)
            self._opened.callback(self._engine.dispose)
        return self

    def __exit__(self, *exc_info) -> None:
        self._opened.close()

    @property
    def engine(self) -> Engine:
        """The monitor's store (claims, the ledger, what was synced)."""
        assert self._engine is not None, "use RepairContext in a `with`"
        return self._engine

    @property
    def app(self) -> AppDatabase:
        if self._app is None:
            from monitor import pipeline

            self._app = pipeline.open_app_database(self.config)
            self._opened.callback(self._app.dispose)
        return self._app

    @property
    def stripe(self) -> StripeSource:
        if self._stripe is None:
            from monitor import pipeline

            opening = (self._source or pipeline.stripe_source)(self.config)
            self._stripe = self._opened.enter_context(opening)
        return self._stripe


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
    payment_id, operator = _validated(config, payment_id, operator, strategy, app)
    role = role_of(config, operator)
    result = RepairResult(
        payment_id, operator, role, strategy, dry_run, "refused", "", requested_id=payment_id
    )
    with RepairContext(config, engine=engine, app=app, source=source) as ctx:
        started = now_utc()
        _attempt(ctx, result)
        result.ledger_id = _record(ctx.engine, result, started)
    return result


def _attempt(ctx: RepairContext, result: RepairResult) -> None:
    """Run the repair asked for in `result` and fill in its outcome and reason, a refusal or failure too."""
    try:
        _repair(ctx, result)
    except Refused as e:
        result.outcome, result.reason = "refused", str(e)
    except claims.ClaimBusy as e:
        result.outcome, result.reason = "in_progress", str(e)
    except MonitorError as e:
        result.outcome, result.reason = "failed", ctx.config.mask(str(e))
    if result.requested_id != result.payment_id:
        result.reason += f" ({result.requested_id} is part of payment {result.payment_id})"


def _repair(ctx: RepairContext, result: RepairResult) -> None:
    """Steps 1 to 4 for `result`; Refused, ClaimBusy or another MonitorError when it stops short."""
    given = result.requested_id
    # The store's answer first, so that a refusal before Stripe is asked still names the payment.
    result.payment_id = canonical_id(given, stored_payment_ids(ctx.engine, [given]))
    _refuse_unless_allowed(result.operator, result.role)
    app, stripe = ctx.app, ctx.stripe
    state = _payment_state(ctx.engine, stripe, given)
    result.payment_id, result.stripe_state = state.payment_id, state.to_json()
    _refuse_unless_payable(state)
    if result.dry_run:
        _plan(app, state, result)
    elif result.strategy == "db":
        _claimed(ctx.engine, state.payment_id, result.operator, lambda: _apply_in_app(app, state, result))
    else:
        _claimed(ctx.engine, state.payment_id, result.operator, lambda: _replay(ctx, state, result))


# --- step 1: what Stripe says now ----------------------------------------------------------------------


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
        # Stripe's answer for an id that names nothing: 404, code resource_missing (docs.stripe.com/error-codes).
        if e.http_status == 404 or e.code == "resource_missing":
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


# --- step 2: the claim ---------------------------------------------------------------------------------


def _claimed(engine: Engine, payment_id: str, operator: str, work: Callable[[], None]) -> None:
    token = claims.take(engine, payment_id, operator)
    outcome = "failed"
    try:
        work()
        outcome = "done"
    finally:
        claims.release(engine, payment_id, token, outcome)


# --- step 3: the app's rows, decided and written in one serialized transaction ---------------------------


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


def _read_rows(app: AppDatabase, state: PaymentState) -> pd.DataFrame:
    with app.engine.connect() as conn:
        return _rows_for(app, conn, state)


def _is_active(app: AppDatabase, rows: pd.DataFrame) -> pd.Series:
    active = {s.lower() for s in app.mapping.active_statuses}
    return rows["status"].map(lambda s: isinstance(s, str) and s.lower() in active).astype(bool)


def _decide(app: AppDatabase, state: PaymentState, rows: pd.DataFrame) -> tuple[str, dict | None]:
    """('none' | 'activate' | 'create', the row to activate or the values to create), or Refused."""
    if _is_active(app, rows).any():
        return "none", None
    if rows.empty:
        return "create", _new_row(state)
    row = rows.sort_values(["created_at", "id"], na_position="first").iloc[-1]
    _refuse_unless_row_says_what_was_paid(row, state)
    return "activate", {"id": _plain(row["id"]), "status": row["status"]}


def _refuse_unless_row_says_what_was_paid(row: pd.Series, state: PaymentState) -> None:
    amount, currency = row["amount"], row["currency"]
    if (pd.notna(amount) and int(amount) != state.amount) or (
        isinstance(currency, str) and currency.lower() != state.currency
    ):
        says = format_money(None if pd.isna(amount) else int(amount), currency or state.currency)
        raise Refused(
            f"row {row['id']} says {says}"
            f" but Stripe was paid {format_money(state.amount, state.currency)}: fix the row, then activate"
        )


def _new_row(state: PaymentState) -> dict:
    """The values of the row to create from what Stripe says."""
    if not state.email:
        raise Refused(f"Stripe has no e-mail for the customer of {state.payment_id}, and the row needs one")
    return {
        "email": state.email,
        "customer_id": state.customer_id,
        "checkout_session_id": state.checkout_session_id,
        "payment_intent_id": state.payment_intent_id,
        "stripe_subscription_id": state.stripe_subscription_id,
        "amount": state.amount,
        "currency": state.currency,
    }


def _plan(app: AppDatabase, state: PaymentState, result: RepairResult) -> None:
    rows = _read_rows(app, state)
    action, values = _decide(app, state, rows)
    result.rows_before = result.rows_after = _json_rows(rows)
    result.plan = {"action": action, "row": values}
    result.outcome = "planned"
    result.reason = OUTCOMES[_OUTCOME_OF_ACTION[action]].planned.format_map(values or {})


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
    result.outcome = _OUTCOME_OF_ACTION[action]
    result.reason = OUTCOMES[result.outcome].applied.format_map(values or {})


# --- step 4: the webhook strategy ----------------------------------------------------------------------


def _replay(ctx: RepairContext, state: PaymentState, result: RepairResult) -> None:
    before = _read_rows(ctx.app, state)
    result.rows_before = _json_rows(before)
    if _is_active(ctx.app, before).any():
        result.rows_after = result.rows_before
        result.outcome, result.reason = "already_active", OUTCOMES["already_active"].resent
        return
    event_type, event_id, said = _resend(ctx, state.payment_id)
    after = _await_active_row(ctx.app, state)
    result.rows_after = _json_rows(after)
    if not _is_active(ctx.app, after).any():
        raise MonitorError(
            f"re-sent {event_id} ({said}), but no active row appeared within {WEBHOOK_WAIT_S:.0f} s"
        )
    result.outcome = "activated"
    result.reason = OUTCOMES["activated"].resent.format(event_type=event_type, event_id=event_id, said=said)


def _resend(ctx: RepairContext, payment_id: str) -> tuple[str | None, str, str]:
    """Re-send the event that announced the payment, as Stripe has it, signed; (its type, its id, what the
    app's endpoint answered). MonitorError unless the endpoint took it (2xx)."""
    event_id = _announcing_event(ctx.engine, payment_id)
    if event_id is None:
        raise MonitorError(
            f"no event announcing {payment_id} is in the store: sync first, or use --strategy db"
        )
    event = ctx.stripe.retrieve("event", event_id)
    status, said = webhook_replay.send_event(
        ctx.config.expected_webhook_url, ctx.config.webhook_secret, event
    )
    if status is None or not 200 <= status < 300:
        raise MonitorError(f"re-sent {event.get('type')} {event_id}, but {said}")
    return event.get("type"), event_id, said


def _await_active_row(app: AppDatabase, state: PaymentState) -> pd.DataFrame:
    """The payment's rows once one of them is active, or as they are after WEBHOOK_WAIT_S."""
    deadline = time.monotonic() + WEBHOOK_WAIT_S
    while True:
        rows = _read_rows(app, state)
        if _is_active(app, rows).any() or time.monotonic() > deadline:
            return rows
        time.sleep(0.5)


def _announcing_event(engine: Engine, payment_id: str) -> str | None:
    from monitor.store.payment_table import PAYMENT_EVENT_TYPES

    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, type FROM stripe_events WHERE object_id = :p ORDER BY created"),
            {"p": payment_id},
        ).all()
    ranked = sorted((PAYMENT_EVENT_TYPES.index(t), i) for i, t in rows if t in PAYMENT_EVENT_TYPES)
    return ranked[0][1] if ranked else None


# --- step 5: the ledger --------------------------------------------------------------------------------


def _plain(value):
    return value.item() if hasattr(value, "item") else value


def _json_value(value):
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return None
    return value.isoformat() if isinstance(value, datetime) else _plain(value)


def _json_rows(rows: pd.DataFrame) -> list[dict]:
    return [{k: _json_value(v) for k, v in record.items()} for record in rows.to_dict("records")]


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
