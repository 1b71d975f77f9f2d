"""Real services for the tests: PostgreSQL, Redis, and the monitor's command line as a subprocess.

The tests start what they need themselves; CI starts with no service running. The servers themselves are
testbed.servers' (the benchmark starts them too); they are named here as well, so a test imports all it
starts from this one module.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from monitor.config import SETTINGS
from testbed.servers import (
    PostgresServer,
    RedisServer,
    ServiceError,
    find_pg_bin,
    free_port,
    start_postgres,
    start_redis,
)

__all__ = [
    "MONITOR_ENV_VARS",
    "REPO_ROOT",
    "PostgresServer",
    "RedisServer",
    "ServiceError",
    "clean_env",
    "find_pg_bin",
    "free_port",
    "run_cli",
    "start_postgres",
    "start_redis",
]

REPO_ROOT = Path(__file__).resolve().parent.parent

# Settings the monitor reads from the environment. A test's subprocess starts without any of them, so a
# developer's shell (or CI's) never leaks into a test; each test passes what it means.
# Every setting of monitor.config (and those later parts read), so a test's subprocess sees only its own.
MONITOR_ENV_VARS = (
    *(setting.name for setting in SETTINGS),
    "TRUSTED_PROXY_HEADER",
    "MONITOR_CONFIG",
)


# --- The monitor's command line ------------------------------------------------------------------------


def clean_env(overrides: Mapping[str, str] | None = None) -> dict[str, str]:
    """os.environ without the monitor's settings, plus `overrides`."""
    env = {k: v for k, v in os.environ.items() if k not in MONITOR_ENV_VARS}
    env.update(overrides or {})
    return env


def run_cli(
    args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `python -m monitor ARGS` from the repository root and capture its output (text)."""
    return subprocess.run(
        [sys.executable, "-m", "monitor", *args],
        cwd=REPO_ROOT,
        env=clean_env(env),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
