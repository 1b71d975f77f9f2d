"""Every decision demo mode makes, in one place: runtime code asks this module instead of testing
`config.demo` or importing the emulator itself.

Demo mode is a configuration without STRIPE_API_KEY. Then the built-in Stripe emulator serves the demo
scenario in-process, the demo app database is created at APP_DATABASE_URL when it does not exist yet, the
store gets the demo's probe history once, the dashboard's one operator needs no sign-in, and nothing needs
a network. The scenario builder (monitor.emulator.demo) is imported only when demo mode needs it: it is
big, and a real account never does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import Engine, func, select

from monitor import store
from monitor.config import Config
from monitor.emulator.demo_names import DEMO_EXPECTED_WEBHOOK_URL, INCIDENT_EMAIL
from monitor.rules.heartbeat import SCHEDULED_JOBS, scheduler_alive
from monitor.store.models import ProbeResultRow

if TYPE_CHECKING:
    from monitor.emulator.demo import Demo
    from monitor.probes import ProbeResult

OPERATOR = "demo-operator"  # who acts in every dashboard session in demo mode


def active(config: Config) -> bool:
    """Demo mode: no STRIPE_API_KEY, so the built-in emulator serves the demo scenario."""
    return config.demo


# --- the scenario and the Stripe account --------------------------------------------------------------


@functools.lru_cache(maxsize=2)
def _build(anchor: datetime) -> Demo:
    from monitor.emulator.demo import build_demo

    return build_demo(anchor)


def scenario_at(app_database_url: str) -> Demo:
    """The demo scenario of the demo app database at `app_database_url`, which is created (anchored at the
    current minute) when it does not exist yet. AppDatabaseError for a database that is not a demo's."""
    from monitor.emulator.demo import ensure_demo_app_db

    return _build(ensure_demo_app_db(app_database_url))


def _scenario(config: Config) -> Demo:
    return scenario_at(config.app_database_url)


def prepare_app_database(config: Config) -> None:
    """In demo mode, create the demo app database when it does not exist yet; otherwise nothing."""
    if config.demo:
        _scenario(config)


@dataclass(frozen=True)
class StripeEndpoint:
    api_key: str
    base_url: str
    rate_limit: int | None  # requests per second; None: no limit (the in-process emulator needs none)


@contextlib.contextmanager
def stripe_endpoint(config: Config) -> Iterator[StripeEndpoint]:
    """The Stripe account to use while the block runs: the configured one, or in demo mode an in-process
    emulator serving the scenario, with a key of its own, stopped when the block ends."""
    if not config.demo:
        yield StripeEndpoint(config.stripe_api_key, config.stripe_api_base, config.stripe_rate_limit)
        return
    from monitor.emulator import server

    key = "sk_test_demo_" + secrets.token_hex(8)
    with server.start(_scenario(config).objects, api_key=key) as running:
        yield StripeEndpoint(key, running.base_url, None)


def ensure_history(config: Config, engine: Engine) -> None:
    """In demo mode, give the store the demo's probe history (the Redis outage of the incident) once;
    otherwise nothing."""
    if not config.demo:
        return
    from monitor.emulator.demo_probes import demo_probe_history

    demo = _scenario(config)
    with engine.begin() as conn:
        if not store.has_probe_history_before(conn, demo.anchor):
            store.save_probe_results(conn, demo_probe_history(demo))


def expected_webhook_url(config: Config) -> str | None:
    """EXPECTED_WEBHOOK_URL, or in demo mode without it the demo's production URL (the one its endpoint
    should have been registered at)."""
    if config.expected_webhook_url or not config.demo:
        return config.expected_webhook_url
    return DEMO_EXPECTED_WEBHOOK_URL


# --- probes -----------------------------------------------------------------------------------------


def contacts_webhook_url(config: Config) -> bool:
    """Whether the probes contact the expected webhook URL: never in demo mode, whose expected URL is its
    own made-up one (or, when EXPECTED_WEBHOOK_URL is set, one the demo must not reach)."""
    return not config.demo


def unprobed(config: Config) -> dict[str, str]:
    """The components the probes leave alone, by name, each with why: in demo mode the Stripe API (there
    is no account to contact) and a set EXPECTED_WEBHOOK_URL (see contacts_webhook_url); none otherwise."""
    if not config.demo:
        return {}
    why = {"stripe_api": "demo mode: no STRIPE_API_KEY, so no Stripe account is contacted"}
    if config.expected_webhook_url is not None:
        why["webhook_endpoint"] = "demo mode: the expected URL is not contacted"
    return why


def check_probes(config: Config) -> dict[str, Callable[[], ProbeResult]]:
    """The probes `check` runs instead of the built-in ones of the same name: in demo mode the Stripe API
    probed at an in-process emulator serving the scenario, so the demo's check walks the Stripe path too;
    none otherwise."""
    if not config.demo:
        return {}

    def stripe_api() -> ProbeResult:
        from monitor import probes

        with stripe_endpoint(config) as stripe:
            result = probes.probe_stripe(stripe.api_key, stripe.base_url)
        return dataclasses.replace(result, detail=f"{result.detail} (demo: the built-in emulator)")

    return {"stripe_api": stripe_api}


# --- people and pages -------------------------------------------------------------------------------


def operator(config: Config) -> str | None:
    """Who acts in every dashboard session without signing in: the demo's operator in demo mode, nobody
    (None) otherwise."""
    return OPERATOR if config.demo else None


def everyone_role(config: Config) -> str | None:
    """The role of every operator when OPERATOR_ROLES is empty: admin in demo mode (its data is made up,
    and its one operator should reach every button), none otherwise (nobody may act)."""
    return "admin" if config.demo else None


def shows_error_details(config: Config) -> bool:
    """Whether a page shows an unexpected error's message and traceback: only in demo mode, whose data is
    made up. Elsewhere they could show a customer's data or a setting in the browser."""
    return config.demo


def sample_customer(config: Config) -> str | None:
    """An e-mail worth looking up first: the incident's customer in demo mode, None otherwise."""
    return INCIDENT_EMAIL if config.demo else None


def needs_refresh(config: Config, engine: Engine, *, now: datetime) -> bool:
    """Whether the dashboard's first view should sync, reconcile and probe once: only in demo mode, never
    while `python -m jobs` is running (it keeps the demo fresh), and then when nothing was reconciled after
    the last sync, or the newest probe result is only the demo's built-in history or older than two probe
    intervals."""
    if not config.demo:
        return False
    with engine.connect() as conn:
        heartbeat = store.last_run_started(conn, SCHEDULED_JOBS)
        if scheduler_alive(
            heartbeat, now=now, sync_interval=config.sync_interval, probe_interval=config.probe_interval
        ):
            return False
        synced = store.last_successful_run(conn, ("sync", "jobs:sync"))
        reconciled = store.last_successful_run(conn, ("reconcile", "jobs:sync"))
        probed = conn.execute(select(func.max(ProbeResultRow.checked_at))).scalar()
    if synced is None or reconciled is None or reconciled < synced:
        return True
    anchor = _scenario(config).anchor
    return probed is None or probed <= anchor or now - probed > timedelta(seconds=2 * config.probe_interval)
