"""Throw-away local servers: PostgreSQL and Redis, each started on a free port of 127.0.0.1 and stopped
by its `stop()`. The tests (through tests/services.py) and the benchmark start what they need themselves;
`make test` (its `system` target) installs the server binaries when they are missing.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

INSTALL_HINT = "run `make test`, which installs them (as root through apt-get), or install them yourself"


class ServiceError(RuntimeError):
    """A local service is missing or did not start; the message says why and what to do."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


# --- PostgreSQL ----------------------------------------------------------------------------------------


def find_pg_bin(name: str) -> str | None:
    """Path of a PostgreSQL server program: on PATH, else Debian's /usr/lib/postgresql/N/bin (newest N)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    candidates.sort(
        key=lambda p: int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
    )
    return candidates[-1] if candidates else None


@dataclass
class PostgresServer:
    """A throw-away PostgreSQL server listening on 127.0.0.1:port, trusting every local connection."""

    port: int
    base_dir: Path
    pg_ctl: str
    run_as: list[str] = field(default_factory=list)
    host: str = "127.0.0.1"

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "postgres.log"

    def url(self, dbname: str = "postgres") -> str:
        """SQLAlchemy URL (SQLAlchemy 2.1 maps `postgresql://` to psycopg 3); libpq accepts it as well."""
        return f"postgresql://postgres@{self.host}:{self.port}/{dbname}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database and return its name."""
        import psycopg

        name = name or f"test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any connection still open to it."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    @contextmanager
    def temporary_database(self) -> Iterator[str]:
        """A fresh, uniquely named database for the duration of the block; yields its URL."""
        name = self.create_database()
        try:
            yield self.url(name)
        finally:
            self.drop_database(name)

    def stop(self) -> None:
        subprocess.run(
            [*self.run_as, self.pg_ctl, "-D", str(self.data_dir), "stop", "-m", "fast", "-w"],
            cwd=self.base_dir,
            capture_output=True,
            timeout=60,
            check=False,
        )
        shutil.rmtree(self.base_dir, ignore_errors=True)


def start_postgres(attempts: int = 3) -> PostgresServer:
    """Initialise and start a PostgreSQL server in a new temporary directory.

    Speed over durability: no fsync anywhere, since the data lives only as long as the test session.
    initdb refuses to run as root, so as root the directory is given to the `postgres` user and the
    programs run through `runuser`.
    """
    initdb, pg_ctl = find_pg_bin("initdb"), find_pg_bin("pg_ctl")
    missing = [
        n for n, p in (("initdb", initdb), ("pg_ctl", pg_ctl), ("postgres", find_pg_bin("postgres"))) if not p
    ]
    if missing:
        raise ServiceError(
            f"PostgreSQL server programs not found ({', '.join(missing)}; looked on PATH and in "
            f"/usr/lib/postgresql/*/bin): {INSTALL_HINT}"
        )
    assert initdb and pg_ctl

    run_as: list[str] = []
    if os.geteuid() == 0:
        if shutil.which("runuser") is None:
            raise ServiceError(
                "running as root, PostgreSQL needs `runuser` (util-linux) to drop to `postgres`"
            )
        run_as = ["runuser", "-u", "postgres", "--"]

    # Not pytest's tmp_path: its parent is private to root, and the server runs as `postgres`.
    base_dir = Path(tempfile.mkdtemp(prefix="ppm-pg-"))
    if run_as:
        try:
            shutil.chown(base_dir, user="postgres", group="postgres")
        except (LookupError, PermissionError) as exc:
            shutil.rmtree(base_dir, ignore_errors=True)
            raise ServiceError(
                f"cannot give {base_dir} to the `postgres` user ({exc}): {INSTALL_HINT}"
            ) from exc

    def run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*run_as, *cmd], cwd=base_dir, capture_output=True, text=True, timeout=timeout, check=False
        )

    data_dir = base_dir / "data"
    init = run(
        [
            initdb,
            "-D",
            str(data_dir),
            "-A",
            "trust",
            "-U",
            "postgres",
            "-E",
            "UTF8",
            "--locale=C",
            "--no-sync",
        ],
        timeout=120,
    )
    if init.returncode != 0:
        shutil.rmtree(base_dir, ignore_errors=True)
        raise ServiceError(f"initdb failed:\n{init.stdout}{init.stderr}")

    server = PostgresServer(port=0, base_dir=base_dir, pg_ctl=pg_ctl, run_as=run_as)
    for _ in range(attempts):
        # The port was free when chosen; another process may take it before the server binds, so retry.
        server.port = free_port()
        options = (
            f"-c listen_addresses=127.0.0.1 -p {server.port} -k {base_dir} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        )
        start = run(
            [
                pg_ctl,
                "-D",
                str(data_dir),
                "-o",
                options,
                "-w",
                "-t",
                "60",
                "start",
                "-l",
                str(server.log_file),
            ],
            timeout=90,
        )
        if start.returncode == 0:
            return server
    log = _tail(server.log_file)
    shutil.rmtree(base_dir, ignore_errors=True)
    raise ServiceError(f"PostgreSQL did not start:\n{start.stdout}{start.stderr}\n{log}")


# --- Redis ---------------------------------------------------------------------------------------------


@dataclass
class RedisServer:
    """A `redis-server` child process on 127.0.0.1:port, without persistence."""

    port: int
    password: str | None
    process: subprocess.Popen[bytes]
    work_dir: Path

    @property
    def url(self) -> str:
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        """Stop the server (a test may do this to simulate Redis going down)."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        shutil.rmtree(self.work_dir, ignore_errors=True)


def _redis_answers(port: int, password: str | None) -> bool:
    import redis

    # retry=None: redis-py 8 retries refused connections (and AuthenticationError, a ConnectionError)
    # with backoff by default, about 4 s per attempt here.
    client = redis.Redis(
        host="127.0.0.1",
        port=port,
        password=password,
        socket_connect_timeout=0.5,
        socket_timeout=0.5,
        retry=None,
    )
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False
    finally:
        client.close()


def start_redis(password: str | None = None, port: int | None = None, attempts: int = 3) -> RedisServer:
    """Start `redis-server` on a free port (or the given one) and wait until it answers PING."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceError(f"redis-server not found on PATH: {INSTALL_HINT}")

    work_dir = Path(tempfile.mkdtemp(prefix="ppm-redis-"))
    log_file = work_dir / "redis.log"
    for _ in range(attempts if port is None else 1):
        chosen = port or free_port()
        cmd = [binary, "--port", str(chosen), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        cmd += ["--dir", str(work_dir), "--logfile", str(log_file)]
        if password:
            cmd += ["--requirepass", password]
        process = subprocess.Popen(cmd, cwd=work_dir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        server = RedisServer(port=chosen, password=password, process=process, work_dir=work_dir)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and process.poll() is None:
            if _redis_answers(chosen, password):
                return server
            time.sleep(0.05)
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
    log = _tail(log_file)
    shutil.rmtree(work_dir, ignore_errors=True)
    raise ServiceError(f"redis-server did not answer PING:\n{log}")
