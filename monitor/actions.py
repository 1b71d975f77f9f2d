"""The dashboard's actions, one function per button, each checking the operator's role itself at every
call, never only by hiding a button. Activation is monitor.repair.activate itself (dry_run=True for the
dialog's plan, then for real): it checks the role and keeps its own ledger.

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

from sqlalchemy import Engine, select, update

from monitor import pipeline, store
from monitor.clock import now_utc
from monitor.config import ROLES, Config
from monitor.errors import BadInput, MonitorError
from monitor.repair import ACTIVATING_ROLES, role_of
from monitor.store.lifecycle import ACKNOWLEDGED, OPEN
from monitor.store.models import FindingRow

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
