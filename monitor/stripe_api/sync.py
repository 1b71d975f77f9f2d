"""Sync: pull Stripe objects into the store, incrementally, by independent created-windows per resource.

Each page's rows and the window's cursor (the last id saved) are written in one transaction, so a sync
killed at any point loses nothing and resumes where it stopped; rows are upserted by id, so fetching a page
twice changes nothing. A resource's cursor (`synced_until`) moves only when all its windows are done; the
next run asks for [synced_until - OVERLAP, now + 1): what is new, plus a short overlap for objects that
became listable a little late. Later changes to older payments (refunds, disputes, a late payment) arrive
through their own lists (refunds and disputes are new objects) and through the events since the last
sync, whose `data.object` snapshots are upserted too (monitor.store.save_objects), ordered within a second
as Stripe lists them: each events window carries its place in the second across pages.

A resource Stripe refuses (403: a restricted key without that permission; 400/404) or keeps failing on
stops alone: the others, the webhook endpoints and the undelivered events still come in, each resource's
outcome is recorded (store.record_sync_outcomes), and the run then raises SyncIncomplete naming each
resource that failed and why.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import queue
import socket
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete
from sqlalchemy.exc import SQLAlchemyError

from monitor import store
from monitor.clock import now_utc
from monitor.errors import (
    MonitorError,
    StripeError,
    StripePermissionError,
    StripeRequestError,
    StripeUnavailable,
)
from monitor.store.leases import Lease
from monitor.store.models import Lease as LeaseRow
from monitor.store.models import SyncState, SyncWindow
from monitor.store.rows import listing_ranks
from monitor.stripe_api.source import ENDPOINTS, RESOURCES, UNDELIVERED_EVENTS, Resource, StripeSource

OVERLAP_S = 300
SYNC_LEASE_S = 120.0  # renewed every 40 s while pages arrive; a killed sync's lease runs out
SYNC_WAIT_S = 60.0
# Enough requests in flight to fill Stripe's live rate (100/s) at ~150 ms a request.
DEFAULT_WORKERS = 16
STOP_AFTER_FAILURES = 3  # windows failing in a row, no page between: Stripe is down, the run stops

# progress(resource name, objects fetched so far in this run, pages so far)
Progress = Callable[[str, int, int], None]


class SyncBusy(MonitorError):
    """Another sync of the same store holds the sync lease."""


class SyncIncomplete(MonitorError):
    """Some resources could not be synced; every other one was. `failed` maps each resource's name to the
    error that stopped it; `result` is what the run did bring in."""

    def __init__(self, failed: dict[str, StripeError], result: SyncResult):
        self.failed, self.result = failed, result
        reasons = "; ".join(f"{name}: {error}" for name, error in failed.items())
        others = (
            "every other resource was synced" if len(failed) < len(RESOURCES) + 2 else "nothing was synced"
        )
        super().__init__(
            f"sync incomplete, {len(failed)} of {len(RESOURCES) + 2} resources failed: {reasons}; {others}"
        )


@dataclass
class SyncResult:
    objects: dict[str, int] = field(default_factory=dict)
    pages: int = 0
    requests: int = 0
    seconds: float = 0.0

    @property
    def total(self) -> int:
        return sum(self.objects.values())


def plan_windows(engine: Engine, resource: Resource, now: int, *, full: bool = False) -> list:
    """The windows to fetch for `resource`: the unfinished ones of an earlier run (resumed), else one new
    window from the cursor minus the overlap (or from the beginning) to now."""
    with engine.begin() as conn:
        if full:
            conn.execute(delete(SyncWindow).where(SyncWindow.resource == resource.name))
            conn.execute(delete(SyncState).where(SyncState.resource == resource.name))
        windows = store.open_windows(conn, resource.name)
        if not windows:
            cursor = store.synced_until(conn, resource.name)
            start = 0 if cursor is None else max(0, cursor - OVERLAP_S)
            store.add_window(conn, resource.name, start, now + 1)
            windows = store.open_windows(conn, resource.name)
    return windows


@dataclass
class _Task:
    resource: Resource
    start: int
    end: int
    starting_after: str | None
    frontier: bool = False  # reaches back to the oldest time this run asks for
    tie: tuple[int, int] | None = None  # events: (created, rank) of the last one saved (listing_ranks)


class _Backfill:
    """Windows of every resource fetched by a pool of threads, all through the source's rate limiter.

    A window that turns out to hold more than a page hands its older part to an idle worker (it splits at
    a point about SPLIT_PAGES pages further back, judged from the page's own span of `created`), so a long
    history is soon fetched by every worker at once, while a run with little new costs one request per
    resource.

    A window whose request fails (Stripe unreachable, or 429/5xx after StripeSource's retries) stops there,
    its cursor saved, while the other windows go on, so a flaky Stripe still leaves every page it gave
    in the store; STOP_AFTER_FAILURES such failures with no page between them (Stripe down) stop the run
    at once. A resource Stripe refuses (403, 400, 404) stops all its windows at once and nothing else.
    Anything else (a rejected key, the store failing) stops the run. `failed` maps each resource that
    failed to its first error; `halted` says whether the run stopped, and `error` why."""

    SPLIT_PAGES = 3

    def __init__(
        self, engine: Engine, source: StripeSource, workers: int, on_page: Callable[[str, int], None]
    ):
        self.engine, self.source, self.workers, self.on_page = engine, source, workers, on_page
        # Windows reaching back to the oldest time asked for come first: fetching one is what splits the
        # rest of the history into windows for the other workers.
        self.tasks: queue.PriorityQueue[tuple[int, int, _Task | None]] = queue.PriorityQueue()
        self._order = itertools.count()
        self.idle = workers
        self.lock = threading.Lock()
        self.pending = 0  # tasks queued or being fetched
        self.error: BaseException | None = None
        self.failed: dict[str, StripeError] = {}
        self.refused: set[str] = set()  # resources Stripe will not list: their other windows are skipped
        self.failures_in_a_row = 0
        self.halted = False  # no more pages: Stripe is down, or something other than Stripe failed
        self.done = threading.Event()
        # Our threads queue for the store here, in order, rather than in SQLite's busy handler, which
        # sleeps up to 100 ms between tries and so left most workers asleep instead of fetching.
        self.write_lock = threading.Lock()

    def add(self, task: _Task) -> None:
        with self.lock:
            self.pending += 1
        self.tasks.put((0 if task.frontier else 1, next(self._order), task))

    def run(self) -> None:
        if self.pending == 0:
            return
        threads = [
            threading.Thread(target=self._work, daemon=True, name=f"sync-{i}") for i in range(self.workers)
        ]
        for t in threads:
            t.start()
        self.done.wait()
        for _ in threads:
            self.tasks.put((2, next(self._order), None))
        for t in threads:
            t.join()

    def _work(self) -> None:
        while True:
            _, _, task = self.tasks.get()
            if task is None:
                return
            with self.lock:
                self.idle -= 1
            name = task.resource.name
            try:
                if not self.halted and name not in self.refused:
                    self._fetch(task)
            except StripeUnavailable as e:
                with self.lock:
                    self.failed.setdefault(name, e)
                    self.failures_in_a_row += 1
                    if not self.halted and self.failures_in_a_row >= STOP_AFTER_FAILURES:
                        self.halted, self.error = True, e
            except (StripePermissionError, StripeRequestError) as e:
                with self.lock:  # Stripe answered, and will answer the same for this list: it stops alone
                    self.failed.setdefault(name, e)
                    self.refused.add(name)
            except BaseException as e:  # noqa: BLE001 - handed to run(), which raises it
                with self.lock:
                    self.error = self.error or e
                    self.halted = True
                self.done.set()
            finally:
                with self.lock:
                    self.idle += 1
                    self.pending -= 1
                    if self.pending == 0:
                        self.done.set()

    def _fetch(self, task: _Task) -> None:
        """Fetch a window page by page, newest first, saving each page with the window's cursor."""
        while not self.halted:
            fetched_at = int(time.time())  # the page shows the objects as they were at least this late
            page = self.source.list_page(
                task.resource, created_gte=task.start, created_lt=task.end, starting_after=task.starting_after
            )
            data = page.get("data") or []
            done = not page.get("has_more") or not data
            last_id = data[-1]["id"] if data else task.starting_after
            split = None if done else self._split_points(task, data)
            ranks, tie = None, None
            if task.resource.kind == "event":  # Stripe's order within a second, counted across pages
                ranks, tie = listing_ranks(data, task.tie)
            with self.write_lock, self.engine.begin() as conn:
                store.save_objects(conn, data, snapshot_at=fetched_at, ranks=ranks)
                store.advance_window(
                    conn,
                    task.resource.name,
                    task.start,
                    task.end,
                    last_id,
                    len(data),
                    done,
                    split=split,
                    tie=tie,
                )
            with self.lock:
                self.failures_in_a_row = 0
            self.on_page(task.resource.name, len(data))
            if done:
                return
            if split:
                bounds = [*split, task.start]
                for newer, older in zip(bounds, bounds[1:], strict=False):
                    self.add(
                        _Task(
                            task.resource, older, newer, None, frontier=task.frontier and older == task.start
                        )
                    )
                task.start, task.frontier = split[0], False
            task.starting_after, task.tie = last_id, tie

    def _split_points(self, task: _Task, data: list[dict]) -> list[int] | None:
        """Where to cut the rest of a window so every worker has work: the page's own span of `created`
        says how long a stretch of time holds about a page; each new window gets about SPLIT_PAGES pages,
        the oldest one everything older (it splits again when it is fetched). None when the queue already
        holds a window for every worker."""
        with self.lock:
            wanted = self.workers - self.tasks.qsize()
        if wanted <= 0:
            return None
        newest, oldest = data[0].get("created") or 0, data[-1].get("created") or 0
        step = max(1, newest - oldest) * self.SPLIT_PAGES
        points = [oldest - step * k for k in range(1, wanted + 1)]
        points = [p for p in points if task.start < p < oldest]
        return points or None


def refresh_undelivered(engine: Engine, source: StripeSource) -> int:
    """Bring the delivery state of stored events up to date: events Stripe still lists as undelivered
    are saved afresh, and stored pending events it no longer lists are marked delivered. Incremental
    windows alone would keep an event pending forever once it was synced while pending."""
    with engine.connect() as conn:
        if not store.has_pending_events(conn):
            return 0  # nothing stored is pending; new pending events come with the incremental list
    snapshot_at = int(time.time())
    undelivered = source.list_all(UNDELIVERED_EVENTS)
    with engine.begin() as conn:
        # Only the events: their objects came with the full listing, whose order within a second this
        # partial one cannot tell.
        store.save_objects(conn, undelivered, snapshot_at=snapshot_at, inner=False)
        store.mark_delivered(conn, {e["id"] for e in undelivered}, snapshot_at)
    return len(undelivered)


def sync(
    engine: Engine,
    source: StripeSource,
    *,
    full: bool = False,
    now: int | None = None,
    progress: Progress | None = None,
    workers: int = DEFAULT_WORKERS,
) -> SyncResult:
    """Bring the store up to date with Stripe, every resource's windows fetched by `workers` threads.
    Raises monitor.errors.StripeError on failure; what was saved before the failure stays saved, and the
    next run resumes from it."""
    started = time.monotonic()
    now = int(time.time()) if now is None else now
    lease = _take_sync_lease(engine)
    try:
        return _sync(
            engine, source, lease, full=full, now=now, progress=progress, workers=workers, started=started
        )
    finally:
        lease.release()


def _take_sync_lease(engine: Engine) -> Lease:
    """One sync per store at a time (the jobs process, a manual `sync`, the dashboard's "Run checks now"):
    two would plan and split the same windows. A second one waits a while, then says who holds it."""
    lease = Lease(
        engine,
        f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}",
        name="sync",
        duration=SYNC_LEASE_S,
    )
    deadline = time.monotonic() + SYNC_WAIT_S
    while not lease.acquire():
        held = lease.current()
        if held.holder and _dead_local_process(held.holder):
            _drop_lease(engine, "sync", held.holder)  # its sync was killed: what it saved is kept, resume
            continue
        if time.monotonic() > deadline:
            held = lease.current()
            until = f" until {held.expires_at:%H:%M:%S} UTC" if held.expires_at else ""
            raise SyncBusy(
                f"another sync of this store is running ({held.holder}{until}); try again when it ends"
            )
        time.sleep(0.5)
    return lease


def _dead_local_process(holder: str) -> bool:
    """True when `holder` (host:pid:…) names a process on this host that no longer exists."""
    host, _, rest = holder.partition(":")
    if host != socket.gethostname():
        return False
    try:
        os.kill(int(rest.split(":")[0]), 0)
    except ProcessLookupError:
        return True
    except (ValueError, PermissionError):
        return False
    return False


def _drop_lease(engine: Engine, name: str, holder: str) -> None:
    t = LeaseRow.__table__
    with engine.begin() as conn:
        conn.execute(delete(t).where(t.c.name == name, t.c.holder == holder))


def _sync(
    engine: Engine,
    source: StripeSource,
    lease: Lease,
    *,
    full: bool,
    now: int,
    progress: Progress | None,
    workers: int,
    started: float,
) -> SyncResult:
    requests_before = source.requests
    result = SyncResult(objects={r.name: 0 for r in RESOURCES})
    counted = threading.Lock()

    renewed = [time.monotonic()]

    def on_page(name: str, n: int) -> None:
        with counted:
            result.objects[name] += n
            result.pages += 1
            if time.monotonic() - renewed[0] > SYNC_LEASE_S / 3:  # keep the lease while we work
                renewed[0] = time.monotonic()
                lease.acquire()
            if progress:
                progress(name, result.objects[name], result.pages)

    backfill = _Backfill(engine, source, workers, on_page)
    for resource in RESOURCES:
        windows = plan_windows(engine, resource, now, full=full)
        oldest = min((w.window_start for w in windows), default=None)
        for w in windows:
            tie = (w.tie_created, w.tie_rank) if w.tie_created is not None else None
            backfill.add(
                _Task(resource, w.window_start, w.window_end, w.starting_after, w.window_start == oldest, tie)
            )
    backfill.run()
    failed = dict(backfill.failed)
    if backfill.halted:
        with contextlib.suppress(SQLAlchemyError):  # the store itself may be what failed
            _record_outcomes(engine, [], failed)
        raise backfill.error
    with engine.begin() as conn:  # two windows finishing at once may each have seen the other open
        for resource in RESOURCES:
            store.settle_cursor(conn, resource.name)

    # The endpoints and the delivery state come in even when a resource failed: the webhook checks need
    # them most when Stripe is having a bad day.
    try:
        endpoints = source.list_all(ENDPOINTS)
        with engine.begin() as conn:
            store.replace_objects(conn, ENDPOINTS.kind, endpoints, snapshot_at=int(time.time()))
        result.objects[ENDPOINTS.name] = len(endpoints)
    except (StripeUnavailable, StripePermissionError, StripeRequestError) as e:
        failed[ENDPOINTS.name] = e
    try:
        result.objects[UNDELIVERED_EVENTS.name] = refresh_undelivered(engine, source)
    except (StripeUnavailable, StripePermissionError, StripeRequestError) as e:
        failed[UNDELIVERED_EVENTS.name] = e
    complete = [r.name for r in RESOURCES if r.name not in failed and _all_windows_done(engine, r.name)]
    complete += [r.name for r in (ENDPOINTS, UNDELIVERED_EVENTS) if r.name not in failed]
    _record_outcomes(engine, complete, failed)
    result.requests = source.requests - requests_before
    result.seconds = time.monotonic() - started
    if failed:
        raise SyncIncomplete(failed, result)
    return result


def _all_windows_done(engine: Engine, resource: str) -> bool:
    with engine.connect() as conn:
        return not store.open_windows(conn, resource)


def _record_outcomes(engine: Engine, complete: list[str], failed: dict[str, StripeError]) -> None:
    with engine.begin() as conn:
        store.record_sync_outcomes(conn, complete, failed, now_utc())
