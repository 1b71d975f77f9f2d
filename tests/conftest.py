"""Shared fixtures: real PostgreSQL and Redis servers, SQLite files, and the monitor's CLI, in this process
(`cli_main`) or as a subprocess (`cli`)."""

from __future__ import annotations

import gc
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from tests.services import (  # noqa: E402  (needs the repository root on sys.path)
    MONITOR_ENV_VARS,
    PostgresServer,
    RedisServer,
    ServiceError,
    run_cli,
    start_postgres,
    start_redis,
)

# --- isolation ---------------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def _keep_main_module():
    """Streamlit's AppTest runs a page as a fresh `__main__` module and leaves it in sys.modules; then
    multiprocessing's "spawn" children of later tests re-run that page as their main script. Put the real
    `__main__` back after every test."""
    main = sys.modules["__main__"]
    yield
    sys.modules["__main__"] = main


# --- PostgreSQL ----------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole session (started on first use)."""
    try:
        server = start_postgres()
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """URL of a fresh, empty database on the session's server, dropped after the test.

    Dispose every engine made on it (`engine.dispose()`): psycopg warns (ResourceWarning) when a connection
    is garbage-collected while open, and collecting here makes that leak fail this test, not a later one.
    """
    with postgres_server.temporary_database() as url:
        yield url
        gc.collect()


@pytest.fixture(params=["sqlite", "postgresql"])
def sqlite_or_postgres_url(request, tmp_path) -> str:
    """A new database, once on SQLite (a file under tmp_path) and once on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'db.sqlite'}"
    return request.getfixturevalue("postgres_url")


def _opened_store(url: str) -> Iterator:
    from monitor import store

    engine = store.open_store(url)
    yield engine
    engine.dispose()


@pytest.fixture
def store_engine(sqlite_or_postgres_url):
    """The monitor's store, migrated to head, on a new database: once on SQLite, once on PostgreSQL."""
    yield from _opened_store(sqlite_or_postgres_url)


@pytest.fixture
def sqlite_store(sqlite_url):
    """The monitor's store, migrated to head, in a new SQLite file."""
    yield from _opened_store(sqlite_url)


@pytest.fixture
def page(browser):
    """A 1400×1000 tab of the module's Chromium; a JavaScript error in the page fails the test."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    yield tab
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium through Playwright, one per test module."""
    from playwright.sync_api import sync_playwright

    from tests.streamlit_server import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


# --- Redis ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    """URL (`redis://127.0.0.1:PORT/0`) of one real redis-server for the whole session, without a password."""
    try:
        server = start_redis()
    except ServiceError as exc:
        pytest.fail(str(exc), pytrace=False)
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture
def redis_factory() -> Iterator[Callable[..., RedisServer]]:
    """Start extra redis-servers for one test: `redis_factory(password=None, port=None) -> RedisServer`.

    The server's `.url` includes the password; `.stop()` takes it down mid-test (an outage); starting again
    with `port=` the old port brings it back. Every server is stopped after the test.
    """
    started: list[RedisServer] = []

    def start(password: str | None = None, port: int | None = None) -> RedisServer:
        try:
            server = start_redis(password=password, port=port)
        except ServiceError as exc:
            pytest.fail(str(exc), pytrace=False)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


# --- SQLite and the command line -----------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """URL of a SQLite database file (not created yet) in the test's temporary directory."""
    return f"sqlite:///{tmp_path / 'test.db'}"


@pytest.fixture
def tmp_env(tmp_path: Path) -> dict[str, str]:
    """Settings that keep a CLI run's databases in the test's temporary directory, never in `data/`.

    Tests add or replace keys before calling `cli` or `cli_main`; every other monitor setting is unset there.
    """
    return {
        "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
        "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
    }


@pytest.fixture
def cli(tmp_env: dict[str, str]) -> Callable[..., CompletedProcess[str]]:
    """`cli(args, env=None, timeout=120) -> CompletedProcess`: run `python -m monitor ARGS` in a subprocess.

    Its environment is os.environ without the monitor's settings, then `tmp_env`, then `env`.
    """

    def run(
        args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120
    ) -> CompletedProcess[str]:
        return run_cli(args, {**tmp_env, **(env or {})}, timeout=timeout)

    return run


@dataclass(frozen=True)
class CliRun:
    """What one run of the command line did: its exit status and what it printed (as CompletedProcess)."""

    returncode: int
    stdout: str
    stderr: str


@pytest.fixture
def cli_main(tmp_env: dict[str, str], monkeypatch, capsys) -> Callable[..., CliRun]:
    """`cli_main(args, env=None) -> CliRun`: `monitor.cli.main(ARGS)` in this process, from the repository
    root, with os.environ without the monitor's settings, then `tmp_env`, then `env` (set through
    monkeypatch, reset at each run). What `cli` does without starting Python and importing pandas again;
    use `cli` where the process itself is tested (its real environment, signals, what it imports)."""
    from monitor import cli

    monkeypatch.chdir(REPO_ROOT)

    def run(args: Sequence[str], env: Mapping[str, str] | None = None) -> CliRun:
        for name in MONITOR_ENV_VARS:
            monkeypatch.delenv(name, raising=False)
        for name, value in {**tmp_env, **(env or {})}.items():
            monkeypatch.setenv(name, value)
        capsys.readouterr()  # what the test printed before is not this run's
        try:
            status = cli.main(list(args))
        except SystemExit as e:  # argparse refusing the arguments
            status = e.code if isinstance(e.code, int) else 2
        out, err = capsys.readouterr()
        return CliRun(status, out, err)

    return run


# --- Stripe emulator fixtures (lead) -------------------------------------------------------------------
