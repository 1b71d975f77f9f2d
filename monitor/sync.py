"""Sync: pull Stripe objects into the store, incrementally, by independent created-windows per resource.

Each page's rows and the window's cursor (the last id saved) are written in one transaction, so a sync
killed at any point loses nothing and resumes where it stopped; rows are upserted by id, so fetching a page
twice changes nothing. A resource's cursor (`synced_until`) moves only when all its windows are done; the
next run asks for [synced_until - OVERLAP, now + 1): what is new, plus a short overlap for objects that
became listable a little late. Later changes to older payments (refunds, disputes, a late payment) arrive
through their own lists (refunds and disputes are new objects) and through the events since the last
sync, whose `data.object` snapshots are upserted too (monitor.store.save_objects).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete

from monitor import store
from monitor.models import SyncState, SyncWindow
from monitor.stripe_source import ENDPOINTS, RESOURCES, UNDELIVERED_EVENTS, Resource, StripeSource

OVERLAP_S = 300

# progress(resource name, objects fetched so far in this run, pages so far)
Progress = Callable[[str, int, int], None]


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


def fetch_window(
    engine: Engine,
    source: StripeSource,
    resource: Resource,
    window,
    *,
    on_page: Callable[[int], None] | None = None,
) -> int:
    """Fetch one window to its end, newest first, saving each page with the cursor. Returns objects saved."""
    starting_after = window.starting_after
    saved = 0
    while True:
        page = source.list_page(
            resource,
            created_gte=window.window_start,
            created_lt=window.window_end,
            starting_after=starting_after,
        )
        data = page.get("data") or []
        done = not page.get("has_more") or not data
        last_id = data[-1]["id"] if data else starting_after
        with engine.begin() as conn:
            store.save_objects(conn, data, snapshot_at=int(time.time()))
            store.advance_window(
                conn, resource.name, window.window_start, window.window_end, last_id, len(data), done
            )
        saved += len(data)
        if on_page:
            on_page(len(data))
        if done:
            return saved
        starting_after = last_id


def refresh_undelivered(engine: Engine, source: StripeSource) -> int:
    """Bring the delivery state of stored events up to date: events Stripe still lists as undelivered
    are saved afresh, and stored pending events it no longer lists are marked delivered. Incremental
    windows alone would keep an event pending forever once it was synced while pending."""
    undelivered = source.list_all(UNDELIVERED_EVENTS)
    snapshot_at = int(time.time())
    with engine.begin() as conn:
        store.save_objects(conn, undelivered, snapshot_at=snapshot_at)
        store.mark_delivered(conn, {e["id"] for e in undelivered}, snapshot_at)
    return len(undelivered)


def sync(
    engine: Engine,
    source: StripeSource,
    *,
    full: bool = False,
    now: int | None = None,
    progress: Progress | None = None,
) -> SyncResult:
    """Bring the store up to date with Stripe. Raises monitor.errors.StripeError on failure; what was saved
    before the failure stays saved, and the next run resumes from it."""
    started = time.monotonic()
    now = int(time.time()) if now is None else now
    requests_before = source.requests
    result = SyncResult()
    for resource in RESOURCES:
        count = 0

        def on_page(n: int, name: str = resource.name) -> None:
            nonlocal count
            count += n
            result.pages += 1
            if progress:
                progress(name, count, result.pages)

        for window in plan_windows(engine, resource, now, full=full):
            fetch_window(engine, source, resource, window, on_page=on_page)
        result.objects[resource.name] = count

    endpoints = source.list_all(ENDPOINTS)
    with engine.begin() as conn:
        store.replace_objects(conn, ENDPOINTS.kind, endpoints, snapshot_at=int(time.time()))
    result.objects[ENDPOINTS.name] = len(endpoints)
    result.objects[UNDELIVERED_EVENTS.name] = refresh_undelivered(engine, source)
    result.requests = source.requests - requests_before
    result.seconds = time.monotonic() - started
    return result
