"""High availability: the store's lease makes exactly one jobs process lead, on PostgreSQL and SQLite; a
standby takes over within the lease time when the leader dies, at once when it stops cleanly."""

from __future__ import annotations

import logging
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from itertools import combinations

import pytest
from sqlalchemy import update

from jobs.process import JobsProcess
from monitor import config, store
from monitor.store.leases import Lease
from monitor.store.models import Lease as LeaseRow
from tests.jobs_process import JobsChild, job_runs, wait_until
from tests.services import free_port

T0 = datetime(2026, 11, 26, 11, 0, tzinfo=UTC)


@pytest.fixture
def engine(store_engine):
    return store_engine


# --- the lease itself -------------------------------------------------------------------------


def test_the_first_taker_leads_and_the_next_one_is_told_who_does(engine):
    alpha, beta = Lease(engine, "alpha", duration=15), Lease(engine, "beta", duration=15)
    assert alpha.acquire(now=T0)
    assert not beta.acquire(now=T0 + timedelta(seconds=5))
    assert beta.current().holder == "alpha"
    assert beta.current().expires_at == T0 + timedelta(seconds=15)
    assert alpha.valid and not beta.valid


def test_the_holder_renews_its_lease_and_keeps_it(engine):
    alpha, beta = Lease(engine, "alpha", duration=15), Lease(engine, "beta", duration=15)
    assert alpha.acquire(now=T0)
    assert alpha.acquire(now=T0 + timedelta(seconds=10))
    assert not beta.acquire(now=T0 + timedelta(seconds=20))  # the renewal moved the expiry to T0 + 25 s
    assert alpha.current().expires_at == T0 + timedelta(seconds=25)


def test_an_expired_lease_is_taken_over_and_its_old_holder_cannot_renew_it(engine):
    alpha, beta = Lease(engine, "alpha", duration=15), Lease(engine, "beta", duration=15)
    assert alpha.acquire(now=T0)
    assert beta.acquire(now=T0 + timedelta(seconds=16))
    assert not alpha.acquire(now=T0 + timedelta(seconds=17))
    assert not alpha.valid
    assert alpha.current().holder == "beta"


def test_a_released_lease_is_free_at_once(engine):
    alpha, beta = Lease(engine, "alpha", duration=15), Lease(engine, "beta", duration=15)
    assert alpha.acquire(now=T0)
    assert alpha.release()
    assert beta.acquire(now=T0 + timedelta(seconds=1))
    assert not alpha.release()  # not ours any more: nothing to give up


def test_a_standby_is_answered_while_the_leader_is_writing(engine):
    """A standby only reads while another's lease runs: it never queues behind the leader's writes (on
    SQLite the one write lock of the file, which a busy leader's jobs hold most of the time)."""
    alpha, beta = Lease(engine, "alpha", duration=15), Lease(engine, "beta", duration=15)
    assert alpha.acquire(now=T0)
    t = LeaseRow.__table__
    with ThreadPoolExecutor(1) as pool, engine.begin() as leader_writing:
        # The leader in the middle of a write that touches the lease row itself: SQLite's write lock,
        # PostgreSQL's row lock. Queueing behind it would take SQLite's 30 s busy timeout, or forever.
        leader_writing.execute(update(t).where(t.c.name == "scheduler").values(holder=t.c.holder))
        answer = pool.submit(beta.acquire, now=T0 + timedelta(seconds=5))
        assert answer.result(timeout=10) is False
    assert beta.current().holder == "alpha"


@pytest.mark.parametrize("moment", ["first ever", "after expiry"])
def test_of_many_processes_trying_at_the_same_moment_exactly_one_leads(engine, moment):
    if moment == "after expiry":
        assert Lease(engine, "old", duration=1).acquire(now=T0)
    contenders = [Lease(engine, f"p{i}", duration=15) for i in range(12)]
    at = T0 + timedelta(seconds=5)
    with ThreadPoolExecutor(len(contenders)) as pool:
        won = list(pool.map(lambda lease: lease.acquire(now=at), contenders))
    assert won.count(True) == 1
    assert contenders[won.index(True)].current().holder == f"p{won.index(True)}"


def test_a_holder_whose_store_is_gone_stops_counting_itself_leader(postgres_server):
    name = postgres_server.create_database()
    engine = store.open_store(postgres_server.url(name))
    try:
        lease = Lease(engine, "alpha", duration=1)
        assert lease.acquire() and lease.valid
        postgres_server.drop_database(name)
        with pytest.raises(Exception, match=name):
            lease.acquire()
        wait_until(lambda: not lease.valid, 2, "the lease to run out locally")
    finally:
        engine.dispose()


# --- the jobs process's leadership ------------------------------------------------------------


def test_a_leader_that_cannot_renew_pauses_every_job_and_stands_by(postgres_server, tmp_path, caplog):
    name = postgres_server.create_database()
    url = postgres_server.url(name)
    cfg = config.load({"MONITOR_DATABASE_URL": url, "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}"})
    engine = store.open_store(url)
    process = JobsProcess(cfg, engine, lease_s=3, renew_s=1)
    try:
        process.tick()
        assert process.leading
        assert all(process.scheduler.get_job(s.id).next_run_time is not None for s in process.specs)
        postgres_server.drop_database(name)
        with caplog.at_level(logging.INFO, logger="jobs"):
            process.tick()
        assert not process.leading
        assert all(process.scheduler.get_job(s.id).next_run_time is None for s in process.specs)
        assert "lost the lease (cannot renew it:" in caplog.text
        assert "standing by: cannot reach the store" in caplog.text
    finally:
        engine.dispose()


# --- several real `python -m jobs` processes --------------------------------------------------

LEASE_ARGS = ("--lease-seconds", "3", "--renew-seconds", "0.5")


def jobs_env(tmp_path, store_url: str) -> dict[str, str]:
    return {
        "MONITOR_DATABASE_URL": store_url,
        "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
        "SYNC_INTERVAL": "1",
        "PROBE_INTERVAL": "1",
        "REDIS_URLS": f"channels=redis://127.0.0.1:{free_port()}/0",
    }


def runs_by(url: str, pid: int) -> list:
    return [
        r
        for r in job_runs(url)
        if r.job.startswith("jobs:") and r.counts.get("process", "").endswith(f":{pid}")
    ]


def leader_of(children: list[JobsChild], url: str) -> JobsChild | None:
    leaders = [c for c in children if c.proc.poll() is None and c.says("leading:")]
    return leaders[0] if len(leaders) == 1 and runs_by(url, leaders[0].pid) else None


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.parametrize("n", [2, 3])
def test_one_of_several_processes_leads_and_a_standby_takes_over_when_it_dies(n, postgres_url, tmp_path):
    env = jobs_env(tmp_path, postgres_url)
    children = [JobsChild(env, tmp_path / f"jobs{i}.log", LEASE_ARGS) for i in range(n)]
    try:
        leader = wait_until(
            lambda: leader_of(children, postgres_url), 30, "one leader running jobs", children=children
        )
        standbys = [c for c in children if c is not leader]
        wait_until(
            lambda: all(c.says("standing by:") for c in standbys),
            10,
            "the others standing by",
            children=children,
        )

        leader.proc.send_signal(signal.SIGKILL)
        leader.proc.wait(5)
        killed_at = datetime.now(UTC)
        started = time.monotonic()
        successor = wait_until(
            lambda: leader_of(standbys, postgres_url), 15, "a standby leading", children=children
        )
        took = time.monotonic() - started
        assert took < 3 + 1 + 1.5  # the lease time, one job interval, and the process's own pace

        if n == 3:  # a clean stop hands over at once: the lease is given up, not left to run out
            last = next(c for c in standbys if c is not successor)
            code, _ = successor.terminate()
            assert code == 0
            handed_at = time.monotonic()
            wait_until(
                lambda: leader_of([last], postgres_url), 10, "the last standby leading", children=children
            )
            if successor.says("the lease is given up"):
                assert time.monotonic() - handed_at < 0.5 + 1.5  # its next attempt, and its pace
            else:  # a run did not finish within the stop's grace time: abandoned, the lease left to run out
                assert successor.says("abandoned the running")
                assert time.monotonic() - handed_at < 3 + 1.5
        for c in children:
            if c.proc.poll() is None:
                assert c.terminate()[0] == 0
        assert not any("Traceback" in c.log() for c in children)
    finally:
        for c in children:
            c.kill()

    runs = [r for r in job_runs(postgres_url) if r.job.startswith("jobs:")]
    # A run the SIGKILL interrupted has no end and no counts: it was the killed leader's, and it ended when
    # that process died.
    spans = [
        (
            r,
            r.started_at,
            r.finished_at or killed_at,
            r.counts.get("process", f"?:{leader.pid}").split(":")[-1],
        )
        for r in runs
    ]
    for a, b in combinations(spans, 2):
        overlap = a[1] < b[2] and b[1] < a[2]
        assert not (overlap and a[0].job == b[0].job), f"two {a[0].job} runs overlap: {a[0]} {b[0]}"
        assert not (overlap and a[3] != b[3]), f"two processes ran jobs at once: {a[0]} {b[0]}"


@pytest.mark.slow
def test_on_sqlite_a_second_process_says_clearly_that_it_stands_by(tmp_path):
    env = jobs_env(tmp_path, f"sqlite:///{tmp_path / 'monitor.db'}")
    children = [JobsChild(env, tmp_path / f"jobs{i}.log", LEASE_ARGS) for i in range(2)]
    try:
        wait_until(
            lambda: any(c.says("leading:") for c in children), 20, "one process leading", children=children
        )
        first = next(c for c in children if c.says("leading:"))
        second = next(c for c in children if c is not first)
        wait_until(
            lambda: second.says("standing by:"), 20, "the other process standing by", children=children
        )
        line = next(x for x in second.log().splitlines() if "standing by:" in x)
        assert f":{first.pid}:" in line and "leads (lease until" in line and "SQLite" in line
        assert not second.says("leading:")
        assert second.terminate()[0] == 0  # a standby has nothing to finish: it stops at once
    finally:
        for c in children:
            c.kill()
