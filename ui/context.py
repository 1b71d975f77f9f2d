"""What every page needs first: the settings, the store engine and the app database (one per process,
in `st.cache_resource`), the operator and their role, and the page's frame (title, banners, sidebar).

The operator, until sign-in arrives (issue 7): in demo mode a local demo operator, shown in a banner;
otherwise the value of the request header named by the `TRUSTED_PROXY_HEADER` setting when the
settings have one; otherwise nobody, and the dashboard is read-only and says so.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from datetime import timedelta

import streamlit as st
from sqlalchemy import Engine

from monitor import pipeline, store
from monitor.app_db import AppDatabase
from monitor.config import EXTRA_SETTINGS, SETTINGS, Config, ConfigError, load
from monitor.errors import MonitorError
from monitor.models import now_utc
from monitor.repair import ACTIVATING_ROLES, role_of
from ui.text import md_code, md_escape

DEMO_OPERATOR = "demo-operator"
ACKNOWLEDGING_ROLES = ACTIVATING_ROLES  # support and admin (issue 7: roles)
EXPORTING_ROLES = ("finance", *ACTIVATING_ROLES)


def _settings_key() -> tuple:
    """The settings as the environment holds them: the cache key of the Config (tests change it)."""
    names = {s.name for s in SETTINGS} | EXTRA_SETTINGS | {"MONITOR_CONFIG"}
    return tuple(sorted((k, v) for k, v in os.environ.items() if k in names))


@st.cache_resource(show_spinner=False)
def _config(settings: tuple) -> Config:
    return load()


def config() -> Config:
    """The settings; a bad one stops the page with its one-line message (secrets masked)."""
    try:
        return _config(_settings_key())
    except ConfigError as e:
        st.error(f"**Bad setting.** {md_escape(e, None)}")
        st.stop()


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> Engine:
    return store.open_store(url)


def engine() -> Engine:
    """The monitor's store, migrated to head once per process."""
    return _engine(config().monitor_database_url)


@st.cache_resource(show_spinner=False)
def _app(url: str, schema: str, _config: Config) -> AppDatabase:
    return pipeline.open_app_database(_config)


def app() -> AppDatabase:
    cfg = config()
    return _app(cfg.app_database_url, cfg.app_schema, cfg)


def key() -> tuple[str, str]:
    """What cached reads are keyed by: the two databases."""
    cfg = config()
    return cfg.monitor_database_url, cfg.app_database_url


# --- who is acting ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Operator:
    name: str | None  # None: nobody signed in, read-only
    role: str | None
    how: str  # "demo" | "proxy header" | "none"

    @property
    def may_activate(self) -> bool:
        return self.name is not None and self.role in ACTIVATING_ROLES

    @property
    def may_acknowledge(self) -> bool:
        return self.name is not None and self.role in ACKNOWLEDGING_ROLES

    @property
    def may_export(self) -> bool:
        return self.name is not None and self.role in EXPORTING_ROLES

    def why_not(self, what: str) -> str:
        if self.name is None:
            return f"Read-only: nobody is signed in, so nobody may {what}."
        return f"{self.name} ({self.role or 'not in OPERATOR_ROLES'}) may not {what}; support or admin may."


def operator() -> Operator:
    """The person acting in this session. Each monitor action checks the role again itself."""
    cfg = config()
    if cfg.demo:
        return Operator(DEMO_OPERATOR, role_of(cfg, DEMO_OPERATOR), "demo")
    header = getattr(cfg, "trusted_proxy_header", None)
    if header:
        value = (st.context.headers.get(header) or "").strip()
        if value:
            return Operator(value, role_of(cfg, value), "proxy header")
    return Operator(None, None, "none")


# --- the demo, brought up to date once per process -----------------------------------------------


@st.cache_resource(show_spinner=False)
def _demo_once(db: tuple) -> dict:
    return {"lock": threading.Lock(), "done": False}


def _demo_needs_refresh(cfg: Config, eng: Engine) -> bool:
    """Whether the demo's data needs one run of the checks: not while `python -m jobs` is running; else when
    nothing was reconciled after the last sync, or the newest probe result is only the demo's built-in
    history (or older than two probe intervals)."""
    from sqlalchemy import func, select

    from monitor.models import ProbeResultRow

    with eng.connect() as conn:
        heartbeat = store.last_run_started(conn, pipeline.SCHEDULED_JOBS)
        if heartbeat is not None and now_utc() - heartbeat < timedelta(
            seconds=2 * min(cfg.sync_interval, cfg.probe_interval)
        ):
            return False  # `python -m jobs` is running (make run starts it): it keeps the demo fresh
        synced = store.last_successful_run(conn, ("sync", "jobs:sync"))
        reconciled = store.last_successful_run(conn, ("reconcile", "jobs:sync"))
        probed = conn.execute(select(func.max(ProbeResultRow.checked_at))).scalar()
    if synced is None or reconciled is None or reconciled < synced:
        return True
    anchor = pipeline.demo_scenario(cfg).anchor
    return (
        probed is None or probed <= anchor or now_utc() - probed > timedelta(seconds=2 * cfg.probe_interval)
    )


def bring_demo_up_to_date() -> None:
    """In demo mode, once per server process: sync, reconcile and probe when the data is stale, so the
    first screen shows the demo's incident as it is now. Never a scheduler: one run, on the first view."""
    from monitor import actions

    cfg = config()
    if not cfg.demo:
        return
    state = _demo_once(key())
    if state["done"]:
        return
    with state["lock"]:
        if state["done"]:
            return
        if _demo_needs_refresh(cfg, engine()):
            with st.status("Demo mode: syncing, reconciling and probing once…", expanded=True) as box:
                bar = st.progress(0.0)

                def progress(step: str, fraction: float) -> None:
                    bar.progress(min(max(fraction, 0.0), 1.0), text=md_escape(step))

                try:
                    actions.run_checks_now(cfg, progress)
                except MonitorError as e:
                    box.update(label="Demo refresh failed", state="error")
                    st.error(md_escape(cfg.mask(str(e)), None))
                else:
                    box.update(label="Demo data is up to date", state="complete", expanded=False)
            st.cache_data.clear()
        state["done"] = True


# --- the page frame -------------------------------------------------------------------------------


def page(title: str, icon: str, intro: str | None = None) -> Operator:
    """Set up a page: config, title, the demo/read-only banner and the sidebar. Returns the operator."""
    st.set_page_config(page_title=f"{title} · Payment Parity Monitor", page_icon=icon, layout="wide")
    cfg = config()
    who = operator()
    mode = "demo (built-in emulator)" if cfg.demo else ("live" if cfg.livemode else "test")
    with st.sidebar:
        st.caption(
            f"**Payment Parity Monitor**  \nStripe: {mode}  \nOperator: {md_code(who.name or 'nobody (read-only)', 60)}"
            f"  \nRole: {md_escape(who.role or '-')}"
        )
    st.title(f"{icon} {title}")
    if cfg.demo:
        st.info(
            f"**Demo mode**: the built-in Stripe emulator and the demo app database. You act as "
            f"**{DEMO_OPERATOR}** (role {who.role or 'none'}). Set `STRIPE_API_KEY` for a real account.",
            icon=":material/science:",
        )
    elif who.name is None:
        st.warning(
            "**Read-only**: nobody is signed in, so activating and acknowledging are off. Put the dashboard "
            "behind a sign-in proxy (see README) to act.",
            icon=":material/lock:",
        )
    if intro:
        st.caption(intro)
    try:
        engine()
    except MonitorError as e:
        st.error(f"**The monitor's store cannot be opened.** {md_escape(cfg.mask(str(e)), None)}")
        st.stop()
    bring_demo_up_to_date()
    return who
