"""The scheduler process: one APScheduler 3.x BlockingScheduler (DESIGN.md: exactly one scheduler
process, never inside Streamlit) and the lease that lets several such processes share one store.

Its jobs are thin wrappers around monitor.scheduled's functions, which record their own job_runs rows:
- jobs:sync      sync + reconcile + alerts, every SYNC_INTERVAL seconds;
- jobs:probes    probes + alerts, every PROBE_INTERVAL seconds;
- jobs:retention delete what is older than RETENTION_DAYS, daily.
Each runs at most once at a time, missed runs are coalesced, and a run may start up to one interval late
(APScheduler's default `misfire_grace_time` of 1 s would drop runs whenever the process is busy).

High availability: every jobs process on one store tries to take or renew the store's lease every few
seconds (monitor.store.leases); only the holder runs jobs, the others stand by. The holder gives the lease up on
a clean stop, and stops starting jobs as soon as it cannot renew it.

Stopping (`stop`, from SIGTERM or SIGINT): no new run starts, a running one gets a few seconds to finish
(the lease stays renewed meanwhile); one that does not is abandoned, which loses nothing, since every store
write is its own transaction and a sync resumes from its saved cursors.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from apscheduler.events import EVENT_JOB_MAX_INSTANCES, EVENT_JOB_MISSED
from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers import SchedulerNotRunningError
from apscheduler.schedulers.blocking import BlockingScheduler
from sqlalchemy import update

from monitor import alerts, demo, scheduled, store
from monitor.clock import now_exact, now_utc
from monitor.config import Config
from monitor.errors import MonitorError
from monitor.secrets import mask_url, mask_value
from monitor.store.leases import Lease
from monitor.store.models import JobRun

log = logging.getLogger("jobs")
DAY_S = 24 * 3600
STOP_GRACE_S = 5.0  # how long a running job may take to finish after SIGTERM before it is abandoned
LEASE_S = 15.0
RENEW_S = 5.0


@dataclass(frozen=True)
class JobSpec:
    id: str
    run: Callable  # (config, engine) -> result
    interval_s: int
    does: str


def job_specs(config: Config) -> list[JobSpec]:
    return [
        JobSpec(scheduled.SYNC_JOB, scheduled.sync_job, config.sync_interval, "sync + reconcile + alerts"),
        JobSpec(scheduled.PROBE_JOB, scheduled.probe_job, config.probe_interval, "probes + alerts"),
        JobSpec(
            scheduled.RETENTION_JOB,
            scheduled.retention_job,
            DAY_S,
            f"delete probe history, resolved findings and job runs older than {config.retention_days} days",
        ),
    ]


def _every(seconds: float) -> str:
    return "every 24 h" if seconds == DAY_S else f"every {seconds:g} s"


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _clock(t: datetime | None) -> str:
    return "?" if t is None else f"{t.astimezone(UTC):%H:%M:%S} UTC"


class JobsProcess:
    """The scheduler, its lease, and the state the metrics show. `tick` is the lease loop's step."""

    def __init__(
        self,
        config: Config,
        engine,
        *,
        lease_s: float = LEASE_S,
        renew_s: float = RENEW_S,
        stop_grace_s: float = STOP_GRACE_S,
        holder: str | None = None,
    ):
        self.config, self.engine = config, engine
        self.holder = holder or f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(2)}"
        self.lease = Lease(engine, self.holder, duration=lease_s)
        self.renew_s, self.stop_grace_s = renew_s, stop_grace_s
        self.specs = job_specs(config)
        self.leading = False
        self._tenure_start = now_utc()
        self.latest_check = None
        self.last_ok: dict[str, float] = {}
        self._failing: set[str] = set()
        self._said_skipping: set[str] = set()
        self._standby_said: tuple | None = None
        self._running: dict[str, int] = {}
        self._cond = threading.Condition()
        self._stopping = threading.Event()
        self._hurry = threading.Event()

        self.scheduler = BlockingScheduler(
            timezone=UTC,
            executors={"default": ThreadPoolExecutor(len(self.specs)), "lease": ThreadPoolExecutor(1)},
            job_defaults={"coalesce": True, "max_instances": 1},
        )
        for spec in self.specs:
            self.scheduler.add_job(
                self._run,
                "interval",
                seconds=spec.interval_s,
                args=[spec],
                id=spec.id,
                name=spec.id,
                next_run_time=None,  # paused until this process leads
                misfire_grace_time=spec.interval_s,
            )
        self.scheduler.add_job(
            self.tick,
            "interval",
            seconds=renew_s,
            id="lease",
            name="lease",
            executor="lease",
            next_run_time=now_exact(),
            misfire_grace_time=max(1, int(renew_s)),
        )
        self.scheduler.add_listener(self._on_event, EVENT_JOB_MAX_INSTANCES | EVENT_JOB_MISSED)

    # --- leadership -----------------------------------------------------------------------------

    def tick(self) -> None:
        """Take or renew the lease; start running jobs when we lead, stop when we no longer do."""
        if self._stopping.is_set():
            self._shutdown_scheduler()
            return
        error = None
        try:
            leading = self.lease.acquire()
        except Exception as e:  # noqa: BLE001 - an unreachable store means standing by, said once
            leading, error = False, _one_line(getattr(e, "orig", None) or e)
        if leading and not self.leading:
            self._lead()
        elif not leading and self.leading:
            self._step_down(error)
        elif not leading:
            self._stand_by(error)

    def _lead(self) -> None:
        self.leading = True
        self._tenure_start = now_utc()  # the runs this process starts from now on are its own
        self._standby_said = None
        log.info(
            "leading: this process (%s) runs the jobs; lease until %s, renewed every %g s",
            self.holder,
            _clock(self.lease.expires_at),
            self.renew_s,
        )
        now = now_exact()
        for spec in self.specs:
            self._modify(spec.id, next_run_time=now)

    def _step_down(self, error: str | None) -> None:
        self.leading = False
        for spec in self.specs:
            self._modify(spec.id, next_run_time=None)
        why = f"cannot renew it: {error}" if error else "another process holds it now"
        log.warning("lost the lease (%s): no job starts here until it is taken back", why)
        self._stand_by(error)

    def _stand_by(self, error: str | None) -> None:
        if error is not None:
            said = ("error", error)
            message = f"standing by: cannot reach the store to take the lease: {error}"
        else:
            try:
                current = self.lease.current()
            except Exception as e:  # noqa: BLE001 - as above
                current, error = None, _one_line(getattr(e, "orig", None) or e)
            if current is None:
                said = ("error", error)
                message = f"standing by: cannot read the lease: {error}"
            else:
                said = ("holder", current.holder)
                message = f"standing by: {current.holder} leads (lease until {_clock(current.expires_at)})"
                if store.is_sqlite(self.engine):
                    message += "; this process takes over when it stops (SQLite store on this machine)"
                else:
                    message += "; this process takes over when it stops or its lease runs out"
        if said != self._standby_said:
            self._standby_said = said
            log.info("%s", message)

    def _modify(self, job_id: str, **changes) -> None:
        # Shutting down, the scheduler has let go of its jobs: nothing to start or pause any more.
        with contextlib.suppress(JobLookupError, SchedulerNotRunningError):
            self.scheduler.modify_job(job_id, **changes)

    # --- running jobs ---------------------------------------------------------------------------

    def _run(self, spec: JobSpec) -> None:
        if self._stopping.is_set() or not self.leading or not self.lease.valid:
            return  # the lease ran out since the run was scheduled: never run without it
        with self._cond:
            self._running[spec.id] = self._running.get(spec.id, 0) + 1
        try:
            result = spec.run(self.config, self.engine)
        except MonitorError as e:
            self._failing.add(spec.id)
            log.warning("%s failed: %s", spec.id, _one_line(e))
        except Exception as e:  # noqa: BLE001 - recorded with its traceback in job_runs by the job itself
            self._failing.add(spec.id)
            log.error("%s failed unexpectedly: %s: %s", spec.id, type(e).__name__, _one_line(e))
        else:
            if spec.id in self._failing:
                self._failing.discard(spec.id)
                log.info("%s ok again", spec.id)
            self.last_ok[spec.id] = time.time()
            if spec.id == scheduled.PROBE_JOB:
                self.latest_check = result
        finally:
            with self._cond:
                self._running[spec.id] -= 1
                if not self._running[spec.id]:
                    del self._running[spec.id]
                self._cond.notify_all()

    def _on_event(self, event) -> None:
        spec = next((s for s in self.specs if s.id == event.job_id), None)
        if spec is None:
            return
        if event.code == EVENT_JOB_MAX_INSTANCES and spec.id not in self._said_skipping:
            self._said_skipping.add(spec.id)
            log.info(
                "%s is still running when its next run is due: that run is skipped (a run takes longer "
                "than its interval, %g s)",
                spec.id,
                spec.interval_s,
            )
        elif event.code == EVENT_JOB_MISSED:
            log.info(
                "%s: a run due at %s was missed (the process was busy or asleep)",
                spec.id,
                _clock(event.scheduled_run_time),
            )

    def metrics_state(self) -> tuple:
        return self.latest_check if self.leading else None, self.leading, dict(self.last_ok)

    # --- start and stop -------------------------------------------------------------------------

    def describe(self) -> list[str]:
        c = self.config
        if demo.active(c):
            mode = "demo mode (no STRIPE_API_KEY): the built-in Stripe emulator with the demo scenario"
        else:
            mode = (
                f"real mode: Stripe at {mask_url(c.stripe_api_base)} with key {mask_value(c.stripe_api_key)}"
            )
        lines = [f"jobs process {self.holder} starting: {mode}; store {mask_url(c.monitor_database_url)}"]
        lines += [f"job {s.id}: {s.does}, {_every(s.interval_s)}" for s in self.specs]
        if c.alert_urls:
            targets = ", ".join(alerts.target_name(u, c) for u in c.alert_urls)
            lines.append(f"alerts to {targets}; at most {c.alerts_per_hour} per hour per target")
        else:
            lines.append("alerts: ALERT_URLS is not set, so alerts are recorded, not sent")
        lines.append(
            f"lease '{self.lease.name}' of {self.lease.duration.total_seconds():g} s, renewed every "
            f"{self.renew_s:g} s: only the process holding it runs jobs"
        )
        return lines

    def run(self) -> int:
        """Run until stopped (see `stop`); returns the exit status."""
        for line in self.describe():
            log.info("%s", line)
        if not self._stopping.is_set():
            self.scheduler.start()  # blocks until _shutdown_scheduler
        return self._finish()

    def stop(self) -> None:
        """Ask the process to stop; safe in a signal handler (no lock, no logging here). A second call
        abandons a running job at once."""
        if self._stopping.is_set():
            self._hurry.set()
        self._stopping.set()
        threading.Thread(target=self._shutdown_scheduler, name="stop", daemon=True).start()

    def _shutdown_scheduler(self) -> None:
        # Not started yet: `run` sees the flag, or the first lease tick does.
        with contextlib.suppress(SchedulerNotRunningError):
            self.scheduler.shutdown(wait=False)

    def _finish(self) -> int:
        deadline = time.monotonic() + self.stop_grace_s
        renew_at = time.monotonic() + self.renew_s
        said = False
        while True:
            with self._cond:
                running = sorted(self._running)
                if not running or self._hurry.is_set() or time.monotonic() >= deadline:
                    break
                if not said:
                    said = True
                    log.info(
                        "stopping: waiting up to %g s for the running %s run",
                        self.stop_grace_s,
                        ", ".join(running),
                    )
                self._cond.wait(0.1)
            if self.leading and time.monotonic() >= renew_at:
                renew_at = time.monotonic() + self.renew_s
                # Keep the lease while the last run finishes, so no standby overlaps it; if that fails
                # the run is abandoned below when the grace time is up.
                with contextlib.suppress(Exception):
                    self.lease.acquire()
        if not running:
            if self.leading:
                try:
                    self.lease.release()
                    log.info("stopped; the lease is given up, so a standby takes over now")
                except Exception as e:  # noqa: BLE001 - it runs out by itself
                    log.info(
                        "stopped; the lease could not be given up (%s): it runs out by itself", _one_line(e)
                    )
            else:
                log.info("stopped")
            self.engine.dispose()
            return 0
        self._abandon(running)
        return 0

    def _abandon(self, running: list[str]) -> None:
        """Leave the running jobs unfinished: their job_runs rows say so, the lease runs out by itself (no
        standby starts while our threads may still write), and the process ends now."""
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(JobRun)
                    .where(
                        JobRun.job.in_(running),
                        JobRun.outcome == "running",
                        # ours only: a dead leader's unfinished run stays as it left it
                        JobRun.started_at >= self._tenure_start,
                    )
                    .values(
                        outcome="failed",
                        finished_at=now_exact(),
                        error="abandoned: the jobs process was stopped while this run was going; what it "
                        "saved stays saved, and the next run continues from there",
                        counts=json.dumps({"process": scheduled.PROCESS, "abandoned": True}),
                    )
                )
        except Exception:  # noqa: BLE001 - best effort; the row then stays 'running'
            pass
        log.info(
            "stopped; abandoned the running %s run (its saved work stays saved); the lease runs out at %s",
            ", ".join(running),
            _clock(self.lease.expires_at),
        )
        logging.shutdown()
        os._exit(0)  # the pool's worker threads would otherwise keep the interpreter alive
