"""The Audit log: repairs and refusals, job runs (acknowledgements among them), alerts sent."""

from __future__ import annotations

import pandas as pd
from sqlalchemy import Engine, select

from monitor.store.models import AlertDelivery, JobRun, RepairRecord
from monitor.views.common import first_line, frame
from monitor.views.payment_reads import REPAIR_FIELDS

# The ledger's columns shared with the customer views, and the id as given (0007; payment_id is the
# payment's canonical id, whichever of its ids the operator gave).
REPAIR_COLUMNS = (*REPAIR_FIELDS, "requested_id")
JOB_COLUMNS = ("id", "job", "started_at", "finished_at", "duration_s", "outcome", "error", "counts")
ALERT_COLUMNS = ("id", "sent_at", "status", "target", "title", "error", "duration_ms", "keys")


def audit_log(engine: Engine, *, limit: int = 200) -> dict:
    """The newest `limit` of each, newest first: {"repairs": REPAIR_COLUMNS (every attempt: done, refused,
    failed, planned; the JSON columns as text), "job_runs": JOB_COLUMNS (error: its first line; counts:
    JSON text), "alerts": ALERT_COLUMNS (targets already masked when recorded)}."""
    limit = max(1, int(limit))
    r, j, a = RepairRecord.__table__, JobRun.__table__, AlertDelivery.__table__
    with engine.connect() as conn:
        repairs = conn.execute(
            select(*(r.c[c] for c in REPAIR_COLUMNS)).order_by(r.c.id.desc()).limit(limit)
        ).all()
        runs = conn.execute(
            select(j.c.id, j.c.job, j.c.started_at, j.c.finished_at, j.c.outcome, j.c.error, j.c.counts)
            .order_by(j.c.id.desc())
            .limit(limit)
        ).all()
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
    job_rows = [
        (
            run.id,
            run.job,
            run.started_at,
            run.finished_at,
            None if run.finished_at is None else (run.finished_at - run.started_at).total_seconds(),
            run.outcome,
            first_line(run.error),
            run.counts,
        )
        for run in runs
    ]
    jobs_df = frame(job_rows, JOB_COLUMNS, times=("started_at", "finished_at"))
    jobs_df["duration_s"] = pd.to_numeric(jobs_df["duration_s"]).astype("float64")
    alerts_df = frame(alerts, ALERT_COLUMNS, times=("sent_at",))
    return {"repairs": repairs_df, "job_runs": jobs_df, "alerts": alerts_df}
