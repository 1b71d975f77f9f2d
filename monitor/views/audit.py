"""The Audit log: repairs and refusals, operator actions (acknowledgements, exports, runs asked for, recoveries),
the background checks (sync, reconcile, probes and the scheduler's jobs) when asked for, alerts sent. JSON
columns become readable text here, once: the page shows words, not JSON."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine, select

from monitor.store.models import AlertDelivery, JobRun, RepairRecord
from monitor.views.common import first_line, frame, loads
from monitor.views.payment_reads import REPAIR_FIELDS

# The ledger's columns shared with the customer views, and the id as given (0007; payment_id is the
# payment's canonical id, whichever of its ids the operator gave).
REPAIR_COLUMNS = (*REPAIR_FIELDS, "requested_id")
JOB_COLUMNS = (
    "id",
    "job",
    "started_at",
    "finished_at",
    "duration_s",
    "outcome",
    "error",
    "operator",
    "role",
    "details",
    "counts",
)
ACTION_PREFIX = (
    "action:"  # job_runs rows of what an operator did (monitor.actions); the rest run by themselves
)
_WHO = ("operator", "role")


def is_operator_action(job: str | None) -> bool:
    return bool(job) and str(job).startswith(ACTION_PREFIX)


def _value_text(value) -> str:
    if isinstance(value, dict):
        return ", ".join(f"{k} {_value_text(v)}" for k, v in value.items()) or "none"
    if isinstance(value, (list, tuple)):
        return ", ".join(_value_text(v) for v in value) or "none"
    return "-" if value is None else str(value)


def details_text(counts: dict | None) -> str:
    """A run's counts as one readable line ("payments: 430 · parity_pct: 98.6 · objects: customers 397, …"),
    without the operator and role, which have columns of their own."""
    if not isinstance(counts, dict):
        return ""
    return " · ".join(f"{k}: {_value_text(v)}" for k, v in counts.items() if k not in _WHO)


def rows_text(rows_json: str | None) -> str:
    """The app rows a repair saw or left, as "row 12 active (usd 14900); …", or "none"."""
    rows = loads(rows_json, None)
    if not isinstance(rows, list):
        return rows_json or ""
    if not rows:
        return "none"
    said = []
    for r in rows:
        if not isinstance(r, dict):
            said.append(str(r))
            continue
        money = f" ({r.get('currency')} {r.get('amount')})" if r.get("amount") is not None else ""
        said.append(f"row {r.get('id', '?')} {r.get('status') or ''}{money}".strip())
    return "; ".join(said)


ALERT_COLUMNS = ("id", "sent_at", "status", "target", "title", "error", "duration_ms", "keys")


def audit_log(engine: Engine, *, limit: int = 200, background: bool = True) -> dict:
    """The newest `limit` of each, newest first: {"repairs": REPAIR_COLUMNS (every attempt: done, refused,
    failed, planned; rows_before and rows_after as readable text), "job_runs": JOB_COLUMNS of the operators'
    actions, and with `background` (the default) also of the checks that run by themselves (error: its first line;
    operator and role: who acted; details: the other counts as one readable line; counts: the JSON text),
    "alerts": ALERT_COLUMNS (targets already masked when recorded)}."""
    limit = max(1, int(limit))
    r, j, a = RepairRecord.__table__, JobRun.__table__, AlertDelivery.__table__
    with engine.connect() as conn:
        repairs = conn.execute(
            select(*(r.c[c] for c in REPAIR_COLUMNS)).order_by(r.c.id.desc()).limit(limit)
        ).all()
        runs_query = select(
            j.c.id, j.c.job, j.c.started_at, j.c.finished_at, j.c.outcome, j.c.error, j.c.counts
        )
        if not background:
            runs_query = runs_query.where(j.c.job.startswith(ACTION_PREFIX, autoescape=True))
        runs = conn.execute(runs_query.order_by(j.c.id.desc()).limit(limit)).all()
        alerts = conn.execute(
            select(
                a.c.id,
                a.c.sent_at,
                a.c.status,
                a.c.target,
                a.c.title,
                a.c.error,
                a.c.duration_ms,
                a.c["keys"],
            )
            .order_by(a.c.id.desc())
            .limit(limit)
        ).all()
    repairs_df = frame(repairs, REPAIR_COLUMNS, times=("started_at", "finished_at"))
    repairs_df["dry_run"] = repairs_df["dry_run"].astype(bool)
    for column in ("rows_before", "rows_after"):
        repairs_df[column] = repairs_df[column].map(rows_text).astype("str")
    job_rows = []
    for run in runs:
        counts = loads(run.counts, None) if isinstance(run.counts, str) else run.counts
        who = counts if isinstance(counts, dict) else {}
        job_rows.append(
            (
                run.id,
                run.job,
                run.started_at,
                run.finished_at,
                None if run.finished_at is None else (run.finished_at - run.started_at).total_seconds(),
                run.outcome,
                first_line(run.error),
                who.get("operator"),
                who.get("role"),
                details_text(counts if isinstance(counts, dict) else None),
                run.counts,
            )
        )
    jobs_df = frame(job_rows, JOB_COLUMNS, times=("started_at", "finished_at"))
    jobs_df["duration_s"] = pd.to_numeric(jobs_df["duration_s"]).astype("float64")
    alerts_df = frame(alerts, ALERT_COLUMNS, times=("sent_at",))
    return {"repairs": repairs_df, "job_runs": jobs_df, "alerts": alerts_df}
