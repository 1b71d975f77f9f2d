"""`python -m jobs` as a real child process for the tests, and the job runs it leaves in the store."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import select

from monitor import store
from monitor.store.models import JobRun
from tests.services import REPO_ROOT, clean_env

# Settings added after tests/services.py's list: unset unless a test says otherwise, so a developer's shell
# never changes a test's timing.
QUIET = {
    "SYNC_INTERVAL": "",
    "PROBE_INTERVAL": "",
    "RETENTION_DAYS": "",
    "ALERTS_PER_HOUR": "",
    "METRICS_PORT": "",
}


class JobsChild:
    """One `python -m jobs` process with its output in a file."""

    def __init__(self, env: Mapping[str, str], log_path: Path, args: tuple[str, ...] = ()):
        self.log_path = log_path
        self._out = open(log_path, "w")  # noqa: SIM115 - closed in stop()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "jobs", *args],
            cwd=REPO_ROOT,
            env=clean_env({**QUIET, **env}),
            stdin=subprocess.DEVNULL,
            stdout=self._out,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def says(self, text: str) -> bool:
        return text in self.log()

    def terminate(self, timeout: float = 15) -> tuple[int, float]:
        """SIGTERM; (exit status, seconds it took to exit)."""
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout)
        finally:
            self.kill()
        return code, time.monotonic() - started

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._out.close()


def wait_until(
    condition: Callable[[], object],
    timeout: float,
    what: str,
    step: float = 0.1,
    *,
    children: Sequence[JobsChild] = (),
):
    """Poll `condition` until it returns something true; fail the test with `what` after `timeout` s, and
    with the output of the jobs processes in `children`, which says what they were doing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(step)
    said = "".join(f"\n--- pid {c.pid} ---\n{c.log()}" for c in children)
    raise AssertionError(f"not within {timeout:g} s: {what}{said}")


def job_runs(url: str) -> list:
    """Every job run in the store at `url`, oldest first, with counts parsed."""
    engine = store.open_store(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(JobRun.__table__).order_by(JobRun.id)).all()
    finally:
        engine.dispose()
    return [
        SimpleNamespace(**{**r._mapping, "counts": json.loads(r.counts) if r.counts else {}}) for r in rows
    ]
