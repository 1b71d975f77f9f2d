"""Databases migrated by Django itself, for the mapping tests: the test project's `payments` app, and a real
dj-stripe installation.

Django runs in a subprocess (`manage.py migrate`), so its global settings never leak into the pytest process.

dj-stripe's own migrations are slow (its 2.10 migration removes some 500 columns one operation at a time:
about 90 s on SQLite and 60 s on PostgreSQL, nearly all of it Django's migration state). So the outcome of
`migrate` is kept, per dj-stripe and Django version, in a cache directory (PPM_TEST_CACHE, default
~/.cache/payment-parity-monitor): the migrated SQLite file, and a `pg_dump` of the migrated PostgreSQL
database. A test starts from a copy of it. The first run on a machine migrates both databases side by side.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

from tests.services import find_pg_bin

PROJECT = Path(__file__).resolve().parent
MIGRATE_TIMEOUT_S = 600
# Change this when what is kept changes (its files, or how they are made): kept databases are then made anew.
CACHE_FORMAT = "sqlite.db + pg_dump v1"


class MigrationFailed(RuntimeError):
    pass


def _django_env(url: str, apps: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "PPM_DJANGO_"))}
    env.update(
        DJANGO_SETTINGS_MODULE="project.settings",
        PPM_DJANGO_DATABASE=url,
        PPM_DJANGO_APPS=apps,
        PYTHONPATH=str(PROJECT),
    )
    return env


def start_migrate(url: str, apps: str = "payments") -> subprocess.Popen:
    """Start `manage.py migrate` of the test project (`apps`: payments or djstripe) into `url`."""
    return subprocess.Popen(
        [sys.executable, "manage.py", "migrate", "--no-input", "-v", "0"],
        cwd=PROJECT,
        env=_django_env(url, apps),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait(process: subprocess.Popen, what: str) -> None:
    try:
        out, err = process.communicate(timeout=MIGRATE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate()
        raise MigrationFailed(f"{what}: still running after {MIGRATE_TIMEOUT_S} s") from None
    if process.returncode != 0:
        raise MigrationFailed(f"{what} failed ({process.returncode}): {(err or out)[-3000:]}")


def migrate(url: str, apps: str = "payments") -> None:
    """Run Django's migrations of the test project into `url` and wait for them."""
    wait(start_migrate(url, apps), f"migrate {apps} into {url}")


# --- dj-stripe, migrated once per version and kept -------------------------------------------------------


def cache_dir() -> Path:
    """Where the migrated dj-stripe databases are kept: one folder per dj-stripe and Django version, test
    project settings and CACHE_FORMAT."""
    root = Path(os.environ.get("PPM_TEST_CACHE") or Path.home() / ".cache" / "payment-parity-monitor")
    source = CACHE_FORMAT.encode() + (PROJECT / "project" / "settings.py").read_bytes()
    tag = hashlib.sha256(source).hexdigest()[:10]
    return root / f"djstripe-{version('dj-stripe')}-django-{version('Django')}-{tag}"


def _pg_tool(name: str) -> str:
    found = find_pg_bin(name)
    if not found:
        raise MigrationFailed(f"{name} not found (PostgreSQL's client programs)")
    return found


def _run(cmd: list[str], what: str) -> None:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    if done.returncode != 0:
        raise MigrationFailed(f"{what} failed ({done.returncode}): {(done.stderr or done.stdout)[-2000:]}")


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://")


def ensure_djstripe_cache(scratch_postgres: Callable[[], str]) -> Path:
    """The cache folder, with `sqlite.db` and `postgresql.sql` made by dj-stripe's migrations if missing.

    `scratch_postgres()` gives the URL of an empty PostgreSQL database to migrate into (called only when the
    dump is missing); both migrations run at once.
    """
    folder = cache_dir()
    sqlite_file, pg_dump = folder / "sqlite.db", folder / "postgresql.sql"
    if sqlite_file.is_file() and pg_dump.is_file():
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="migrate-", dir=folder))
    try:
        running = []
        if not sqlite_file.is_file():
            target = work / "sqlite.db"
            running.append(("sqlite", start_migrate(f"sqlite:///{target}", "djstripe"), target))
        if not pg_dump.is_file():
            pg_url = scratch_postgres()
            running.append(("postgresql", start_migrate(pg_url, "djstripe"), pg_url))
        for dialect, process, target in running:
            wait(process, f"dj-stripe migrate into {dialect}")
            if dialect == "sqlite":
                os.replace(target, sqlite_file)
            else:
                dumped = work / "postgresql.sql"
                _run(
                    [_pg_tool("pg_dump"), "--no-owner", "--no-privileges", "-f", str(dumped), _libpq(target)],
                    "pg_dump of the migrated dj-stripe database",
                )
                os.replace(dumped, pg_dump)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


def djstripe_sqlite(folder: Path, path: Path) -> str:
    """A copy of the migrated dj-stripe SQLite database at `path`; its URL."""
    shutil.copyfile(folder / "sqlite.db", path)
    return f"sqlite:///{path}"


def djstripe_postgres(folder: Path, url: str) -> str:
    """The migrated dj-stripe database restored into the empty PostgreSQL database `url`; `url`."""
    _run(
        [
            _pg_tool("psql"),
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-f",
            str(folder / "postgresql.sql"),
            _libpq(url),
        ],
        "restoring the migrated dj-stripe database",
    )
    return url
