"""PostgreSQL for the measurements that run again on it: a throw-away server (testbed.servers) or the one
--postgres names, and a new database on it for each use, dropped when the benchmark ends."""

from __future__ import annotations

import contextlib
import uuid

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.harness import log
from testbed.servers import start_postgres


def postgres_server(mode: str, stack: contextlib.ExitStack) -> tuple[str | None, str]:
    """(a server URL whose user may create databases, or None; what was done)."""
    if mode == "off":
        return None, "skipped (--postgres off)"
    if mode != "auto":
        return mode, "the server given by --postgres"
    log("starting PostgreSQL (testbed.servers.start_postgres)")
    try:
        server = start_postgres()
    except Exception as e:  # noqa: BLE001 - ServiceError and friends: say why and go on without it
        return None, f"skipped: PostgreSQL did not start: {str(e).splitlines()[0] if str(e) else e!r}"
    stack.callback(server.stop)
    return server.url("postgres"), "a throw-away server from testbed.servers.start_postgres (fsync off)"


def postgres_database(admin_url: str, stack: contextlib.ExitStack) -> str:
    """A new, empty database on the server, dropped when the benchmark ends."""
    name = f"ppm_bench_{uuid.uuid4().hex[:10]}"
    _on_server(admin_url, f'CREATE DATABASE "{name}"')
    stack.callback(_on_server, admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _on_server(admin_url: str, statement: str) -> None:
    """Run one statement outside a transaction (CREATE and DROP DATABASE refuse to run inside one)."""
    engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def postgres_version(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar()).split()[0]
    finally:
        engine.dispose()
