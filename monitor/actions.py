"""The dashboard's actions, one function per button, each checking the operator's role itself at every
call, never only by hiding a button. Activation is monitor.repair.activate itself (dry_run=True for the
dialog's plan, then for real): it checks the role and keeps its own ledger.

Recovering an incident ("Recover all", `python -m monitor recover`) is that same activation, one payment of
the incident at a time (`plan_recovery`, `recover_incident`); each run is also a job_runs row
"action:recover" with its counts.

Acknowledgements, CSV exports and the runs asked for from the dashboard ("Run checks now", "Reconcile
now") are recorded as job_runs rows (jobs "action:acknowledge", "action:export", "action:run-checks" and
"action:reconcile", outcome ok or failed, the reason as the error, operator, role and what was asked in
counts): the audit log shows them beside the other runs, and a refusal leaves the same trace as a
success. A signed-in person who is not in OPERATOR_ROLES is turned away from the dashboard by
`authorize_view`, and each such refusal is recorded too ("action:view"). Not in the repairs ledger, which
is about payments and subscriptions."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from sqlalchemy import Engine, select, update

from monitor import pipeline, repair, store
from monitor.app_db import AppDatabase
from monitor.clock import now_utc
from monitor.config import ROLES, Config
from monitor.errors import BadInput, MonitorError
from monitor.repair import ACTIVATING_ROLES, STRATEGIES, RepairResult, role_of
from monitor.rules.incidents import Incident
from monitor.store import lifecycle
from monitor.store.lifecycle import ACKNOWLEDGED, OPEN
from monitor.store.models import FindingRow
from monitor.views.incidents import find_incident

# Who may do what: viewer reads, finance also exports, support also activates, acknowledges and runs the
# checks, admin everything. Activation's own list is monitor.repair.ACTIVATING_ROLES. Running the checks is
# the operators' who act on what they find: a full sync spends the Stripe rate limit that the scheduler's sync
# and every activation's live re-check share, and a reconcile moves findings through their lifecycle. Viewers
# and finance read what the scheduler keeps fresh.
VIEWING_ROLES = ROLES
EXPORTING_ROLES = ("finance", *ACTIVATING_ROLES)
ACKNOWLEDGING_ROLES = ACTIVATING_ROLES
RUNNING_ROLES = ACTIVATING_ROLES
ACKNOWLEDGE_JOB = "action:acknowledge"
EXPORT_JOB = "action:export"
VIEW_JOB = "action:view"
RUN_CHECKS_JOB = "action:run-checks"
RECONCILE_JOB = "action:reconcile"
RECOVER_JOB = "action:recover"
RECOVERING_ROLES = ACTIVATING_ROLES
# The findings a recovery closes for a customer whose subscription is active again: the webhooks that did
# not reach the app. What they were about is now in place; the delivery itself stays as it was.
WEBHOOK_DELIVERY_KINDS = ("webhook_missing", "webhook_undelivered", "webhook_failed")
MAX_NOTE = 2000
RUN_STEPS = ("sync", "reconcile", "check")


class Forbidden(MonitorError):
    """The operator's role does not allow the action; the message says who may."""


def _role(role: str | None) -> str:
    return f"role {role}" if role else "not in OPERATOR_ROLES"


def authorize_export(
    engine: Engine, config: Config, operator: str, what: str, rows: int | None = None
) -> str:
    """Check, at every export, that `operator` may download data as CSV (finance, support or admin from
    OPERATOR_ROLES; everyone in the demo). Returns the role. Raises Forbidden for anyone else and BadInput
    for a missing operator. Every call, granted or refused, is recorded (see the module docstring), so the
    audit log says who took which table out of the dashboard."""
    operator = (operator or "").strip()
    with store.RunRecorder(engine, EXPORT_JOB) as run:
        role = role_of(config, operator) if operator else None
        run.counts = {"operator": operator, "role": role, "export": str(what)[:200], "rows": rows}
        if not operator:
            raise BadInput("an operator is required (who is exporting?)")
        if role not in EXPORTING_ROLES:
            raise Forbidden(f"{operator} may not export data ({_role(role)}; finance, support or admin may)")
        return role


def authorize_view(engine: Engine, config: Config, operator: str) -> str:
    """Check that a signed-in `operator` may see the dashboard at all: any role in OPERATOR_ROLES (viewer,
    finance, support, admin). Returns the role; raises Forbidden, and records the refusal, for anyone else
    (signed in with the identity provider, or named by the proxy, yet not in OPERATOR_ROLES). Granted views
    are not recorded: reading is not an action."""
    operator = (operator or "").strip()
    role = role_of(config, operator) if operator else None
    if operator and role in VIEWING_ROLES:
        return role
    refusal = Forbidden(
        f"{operator or 'nobody'} may not use the dashboard ({_role(role)}; an admin adds people to "
        "OPERATOR_ROLES)"
    )
    with contextlib.suppress(Forbidden), store.RunRecorder(engine, VIEW_JOB) as run:
        run.counts = {"operator": operator, "role": role}
        raise refusal  # recorded as a failed run with the reason, then raised to the caller below
    raise refusal


def acknowledge(engine: Engine, config: Config, finding_id: str, operator: str, note: str) -> None:
    """Mark an open (or already acknowledged) finding acknowledged with `note`: it stays listed, and alerts
    skip it. The role is checked at every call (support or admin, OPERATOR_ROLES; everyone in the demo).
    Raises Forbidden for any other operator, BadInput for a missing operator or note or an unknown or
    resolved finding; every call, refused or not, is recorded (see the module docstring)."""
    operator = (operator or "").strip()
    note = (note or "").strip()
    finding_id = str(finding_id or "").strip()
    with store.RunRecorder(engine, ACKNOWLEDGE_JOB) as run:
        role = role_of(config, operator) if operator else None
        run.counts = {"finding_id": finding_id, "operator": operator, "role": role, "note": note[:MAX_NOTE]}
        if not operator:
            raise BadInput("an operator is required (who is acknowledging?)")
        if role not in ACKNOWLEDGING_ROLES:
            raise Forbidden(f"{operator} may not acknowledge findings ({_role(role)}; support or admin may)")
        if not note:
            raise BadInput("a note is required: say why the finding is acknowledged")
        if len(note) > MAX_NOTE:
            raise BadInput(f"the note is {len(note)} characters long; at most {MAX_NOTE} are kept")
        t = FindingRow.__table__
        with engine.begin() as conn:
            # Compare-and-set: a finding resolved meanwhile is not acknowledged behind the run's back.
            changed = conn.execute(
                update(t)
                .where(t.c.id == finding_id, t.c.status.in_((OPEN, ACKNOWLEDGED)))
                .values(status=ACKNOWLEDGED, ack_note=note, ack_by=operator, ack_at=now_utc())
            ).rowcount
            if changed != 1:
                status = conn.execute(select(t.c.status).where(t.c.id == finding_id)).scalar()
                raise BadInput(
                    f"no finding {finding_id!r}" if status is None else f"finding {finding_id} is {status}"
                )


@contextlib.contextmanager
def _granted_run(engine: Engine, config: Config, operator: str | None, job: str, what: str) -> Iterator[dict]:
    """Record one run asked for from the dashboard as a `job` row, refusing it (Forbidden, recorded with
    the reason) unless `operator` has a role in RUNNING_ROLES. Yields the row's counts for the run to add
    to. With no operator (nobody signed in), only the demo's everyone-is-admin rule lets a run through."""
    operator = (operator or "").strip()
    with store.RunRecorder(engine, job) as run:
        role = role_of(config, operator)
        run.counts = {"operator": operator, "role": role}
        if role not in RUNNING_ROLES:
            raise Forbidden(
                f"{operator} may not {what} ({_role(role)}; support or admin may)"
                if operator
                else f"nobody is signed in, and only a signed-in support or admin operator may {what}"
            )
        yield run.counts


def run_checks_now(
    config: Config,
    progress: Callable[[str, float], None],
    *,
    operator: str | None = None,
    engine: Engine | None = None,
) -> dict:
    """Sync, reconcile and check once, now (the dashboard's "Run checks now"; never a scheduler), calling
    progress(step, fraction done) before each step and progress("done", 1.0) at the end. The role is
    checked first, at every call: `operator` must be support or admin in OPERATOR_ROLES (in the demo without
    it, everyone is admin); anyone else, or nobody, gets Forbidden and nothing runs. Every call, refused or
    not, is a job_runs row "action:run-checks" (see the module docstring). A failing step is recorded by the
    step itself, kept in the summary's `errors`, and the next steps still run (a failed sync still leaves
    the last snapshot to reconcile, and the check says what is down). Returns {"ok", "errors": [one line
    each], "objects", "payments", "parity_pct", "open_findings", "status", "components": {name: status}}."""
    own = engine is None
    engine = engine or store.open_store(config.monitor_database_url)
    try:
        with _granted_run(engine, config, operator, RUN_CHECKS_JOB, "run the checks now") as counts:
            summary = _run_steps(config, engine, progress)
            counts.update(ok=summary["ok"], errors=summary["errors"], status=summary.get("status"))
            return summary
    finally:
        if own:
            engine.dispose()


def reconcile_now(config: Config, operator: str | None, *, engine: Engine) -> pipeline.Report:
    """One reconcile, now (the "Reconcile now" offered after an activation), with the role checked and the
    call recorded as "action:reconcile" exactly as run_checks_now does. Returns the reconcile's report."""
    with _granted_run(engine, config, operator, RECONCILE_JOB, "reconcile now") as counts:
        report = pipeline.run_reconcile(config, engine)
        counts["open_findings"] = sum(report.summary["open_by_kind"].values())
        return report


def _run_steps(config: Config, engine: Engine, progress: Callable[[str, float], None]) -> dict:
    summary: dict = {"ok": True, "errors": []}
    n = len(RUN_STEPS)
    for i, step in enumerate(RUN_STEPS):
        progress(step, i / n)
        try:
            if step == "sync":
                summary["objects"] = pipeline.run_sync(config, engine).total
            elif step == "reconcile":
                report = pipeline.run_reconcile(config, engine)
                summary["payments"] = report.summary["payments"]
                summary["parity_pct"] = report.summary["parity_pct"]
                summary["open_findings"] = sum(report.summary["open_by_kind"].values())
            else:
                check = pipeline.run_check(config)
                summary["status"] = check.status
                summary["components"] = {c.name: c.status for c in check.components}
        except MonitorError as e:
            summary["ok"] = False
            summary["errors"].append(f"{step}: {config.mask(str(e))}")
    progress("done", 1.0)
    return summary


# --- recovering an incident ----------------------------------------------------------------------------


def step_of(result: RepairResult) -> str:
    """What one payment's repair did, or for a dry run would do, in one word: activate or create (a dry
    run's plan), activated, created, already_active, refused, failed or in_progress."""
    if result.outcome == "planned":
        action = (result.plan or {}).get("action")
        return {"activate": "activate", "create": "create"}.get(action, "already_active")
    return result.outcome


@dataclass
class RecoveryPlan:
    """What recovering `incident` would do: one dry-run RepairResult per recoverable payment (live at Stripe
    now, each with its plan: the row to activate or create, or the reason it would be refused)."""

    incident: Incident
    operator: str
    role: str | None
    strategy: str
    results: list[RepairResult] = field(default_factory=list)

    @property
    def counts(self) -> dict[str, int]:
        """How many payments per step_of, in the order met."""
        counts: dict[str, int] = {}
        for r in self.results:
            counts[step_of(r)] = counts.get(step_of(r), 0) + 1
        return counts

    @property
    def refused(self) -> list[RepairResult]:
        """The payments that are not (or would not be) done, each with its reason."""
        return [r for r in self.results if not r.ok]

    @property
    def amount(self) -> dict[str, int]:
        """The money of the payments that are, or would be, done: minor units per currency."""
        total: dict[str, int] = {}
        for r in self.results:
            state = r.stripe_state or {}
            if r.ok and state.get("currency") and state.get("amount") is not None:
                total[state["currency"]] = total.get(state["currency"], 0) + int(state["amount"])
        return total

    @property
    def exit_status(self) -> int:
        """DESIGN's exit status of `recover`: 0 when every payment is done or already active, else 1."""
        return 1 if self.refused else 0


@dataclass
class Recovery(RecoveryPlan):
    """What recovering `incident` did: one RepairResult per recoverable payment, and the webhook findings
    closed for the customers whose subscription is active (their ids)."""

    dry_run: bool = False
    closed: list[str] = field(default_factory=list)


def plan_recovery(
    config: Config,
    incident_id: str,
    operator: str,
    *,
    strategy: str = "db",
    engine: Engine | None = None,
) -> RecoveryPlan:
    """The dry run of recover_incident: repair.activate(dry_run=True) for each recoverable payment of the
    incident (planned, already active, or refused with the reason). Nothing is written in the app's
    database nor to the findings; the repairs ledger keeps each dry run, as it does every activation asked.
    Raises BadInput (an unknown incident, a missing operator, an unknown strategy) and Forbidden."""
    done = recover_incident(config, incident_id, operator, strategy=strategy, dry_run=True, engine=engine)
    return RecoveryPlan(done.incident, done.operator, done.role, done.strategy, done.results)


def recover_incident(
    config: Config,
    incident_id: str,
    operator: str,
    *,
    strategy: str = "db",
    dry_run: bool = False,
    progress: Callable[[int, int, RepairResult], None] | None = None,
    engine: Engine | None = None,
) -> Recovery:
    """Activate every recoverable payment of the incident through repair.activate, the one exactly-once
    repair (re-checked live at Stripe, claimed per payment, serialized in the app's database), one payment
    at a time in the order they were paid, calling progress(done, total, result) after each.

    For each payment whose customer's subscription is active afterwards (activated, created or already
    active) the open webhook findings about it are acknowledged with the note "recovered by repair #<ledger
    id> (incident inc_…)": those of the payment, of its events, and those of its customer that name no
    payment. Acknowledged, not resolved, so a reconcile that still sees the webhook missing from the app's
    log does not reopen them (lifecycle.close_findings).

    Safe to run twice, or from two places at once: a payment another run is repairing waits for that claim
    and is then already active. Raises Forbidden up front for an operator who may not activate, BadInput
    for a missing operator, an unknown strategy or an unknown incident (a resolved one has nothing to
    recover: an empty Recovery)."""
    operator = (operator or "").strip()
    incident_id = (incident_id or "").strip()
    own = engine is None
    engine = engine or store.open_store(config.monitor_database_url)
    try:
        with store.RunRecorder(engine, RECOVER_JOB) as run:
            role = role_of(config, operator) if operator else None
            run.counts = {
                "incident": incident_id[:100],
                "operator": operator,
                "role": role,
                "dry_run": dry_run,
            }
            if not operator:
                raise BadInput("an operator is required (who is recovering?)")
            if role not in RECOVERING_ROLES:
                raise Forbidden(
                    f"{operator} may not recover incidents ({_role(role)}; support or admin may activate)"
                )
            if strategy not in STRATEGIES:
                raise BadInput(f"strategy {strategy!r} is not one of {', '.join(STRATEGIES)}")
            app = pipeline.open_app_database(config)
            try:
                recovery = _recover(
                    config, engine, app, incident_id, operator, role, strategy, dry_run, progress
                )
            finally:
                app.dispose()
            run.counts.update(steps=recovery.counts, closed=len(recovery.closed))
            return recovery
    finally:
        if own:
            engine.dispose()


def _recover(
    config: Config,
    engine: Engine,
    app: AppDatabase,
    incident_id: str,
    operator: str,
    role: str | None,
    strategy: str,
    dry_run: bool,
    progress: Callable[[int, int, RepairResult], None] | None,
) -> Recovery:
    incident = find_incident(engine, app, config, incident_id, now=now_utc())
    if incident is None:
        raise BadInput(
            f"no incident {incident_id!r} is known: `python -m monitor incidents` lists the open ones"
        )
    recovery = Recovery(incident, operator, role, strategy, dry_run=dry_run)
    with engine.connect() as conn:
        open_now = lifecycle.current_findings(conn, statuses=(OPEN,))
    targets = _recoverable_payments(open_now, incident)
    if not targets:
        return recovery
    webhooks = [f for f in open_now if f.kind in WEBHOOK_DELIVERY_KINDS]
    # One Stripe connection for the whole run (in demo mode, one in-process emulator, not one per payment).
    with pipeline.stripe_source(config) as stripe:
        for n, target in enumerate(targets, 1):
            result = repair.activate(
                config,
                target.payment_id,
                operator,
                strategy=strategy,
                dry_run=dry_run,
                engine=engine,
                app=app,
                source=lambda _config: contextlib.nullcontext(stripe),
            )
            recovery.results.append(result)
            if not dry_run and result.ok:
                recovery.closed += _close_webhook_findings(engine, webhooks, target, result, incident)
            if progress is not None:
                progress(n, len(targets), result)
    return recovery


@dataclass(frozen=True)
class _Target:
    """A recoverable payment of an incident, with what its findings say of it."""

    payment_id: str
    customer_id: str | None
    event_ids: frozenset[str]


def _recoverable_payments(open_now: list[lifecycle.StoredFinding], incident: Incident) -> list[_Target]:
    """The payments of the incident's recoverable findings that are still open, once each, oldest first."""
    wanted = set(incident.recoverable_ids)
    found = [f for f in open_now if f.id in wanted and f.payment_id]
    found.sort(key=lambda f: (f.occurred_at is None, f.occurred_at or f.first_seen, f.payment_id))
    targets: dict[str, _Target] = {}
    for f in found:
        known = targets.get(f.payment_id)
        events = {f.event_id} if f.event_id else set()
        targets[f.payment_id] = _Target(
            f.payment_id,
            (known.customer_id if known else None) or f.customer_id,
            frozenset(events | (known.event_ids if known else set())),
        )
    return list(targets.values())


def _close_webhook_findings(
    engine: Engine,
    webhooks: list[lifecycle.StoredFinding],
    target: _Target,
    result: RepairResult,
    incident: Incident,
) -> list[str]:
    """Acknowledge the open webhook findings of a payment whose customer is active now; the ids changed."""
    state = result.stripe_state or {}
    ids = {target.payment_id, result.payment_id, result.requested_id}
    ids |= {state.get(k) for k in ("payment_id", "checkout_session_id", "invoice_id", "payment_intent_id")}
    ids |= set(state.get("payment_intent_ids") or [])
    ids.discard(None)
    customer = target.customer_id or state.get("customer_id")
    about = [
        f.id
        for f in webhooks
        if (f.payment_id and f.payment_id in ids)
        or (f.event_id and f.event_id in target.event_ids)
        or (not f.payment_id and customer and f.customer_id == customer)
    ]
    if not about:
        return []
    note = f"recovered by repair #{result.ledger_id} (incident {incident.id})"
    with engine.begin() as conn:
        return lifecycle.close_findings(conn, about, note=note, by=result.operator, now=now_utc())
