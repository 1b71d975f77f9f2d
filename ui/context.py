"""What every page needs first: the settings, the store engine and the app database (one per process,
in `st.cache_resource`), the operator and their role, and the page's frame (title, banners, sidebar).

Who the operator is, in this order:
- demo mode: a local demo operator (monitor.demo), shown in a banner;
- `TRUSTED_PROXY_HEADER` set: the value of that request header, put there by an authenticating reverse
  proxy (oauth2-proxy's `X-Forwarded-Email`), and only on a request that also carries the proxy's shared
  secret (`TRUSTED_PROXY_SECRET`, in `TRUSTED_PROXY_SECRET_HEADER`), since anyone who reaches Streamlit's
  port can type the identity header but nobody but the proxy knows the secret;
- an `[auth]` section in Streamlit's secrets (`.streamlit/secrets.toml`): `st.login` (OpenID Connect),
  the operator being the e-mail the identity provider vouches for;
- neither: nobody, and the dashboard is read-only and says so.
With a sign-in configured, nobody sees any data before signing in, and a signed-in person who is not in
OPERATOR_ROLES is turned away (and the refusal recorded). The role is looked up again at every rerun, and
each monitor action checks it once more itself: st.login's cookie lives 30 days, a role may not.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import streamlit as st
from sqlalchemy import Engine

from monitor import actions, demo, pipeline, store
from monitor.app_db import AppDatabase
from monitor.clock import now_utc
from monitor.config import SETTINGS, Config, ConfigError, load
from monitor.errors import MonitorError
from monitor.repair import ACTIVATING_ROLES, role_of
from monitor.store.db import for_reading
from ui import menu
from ui.text import md_code, md_escape, short

ACKNOWLEDGING_ROLES = actions.ACKNOWLEDGING_ROLES  # support and admin
EXPORTING_ROLES = actions.EXPORTING_ROLES  # finance, support and admin
RUNNING_ROLES = actions.RUNNING_ROLES  # support and admin: "Run checks now" spends Stripe's rate limit
OIDC = "OpenID Connect (st.login)"
PROXY = "proxy header"
MAX_OPERATOR = 320  # an e-mail address at most


def _settings_key() -> tuple:
    """The settings as the environment and `monitor.toml` hold them: the cache key of the Config. Tests
    change the environment; an admin who removes someone from OPERATOR_ROLES in `monitor.toml` is obeyed
    at that person's next click, without a restart (the environment still wins over the file)."""
    names = {s.name for s in SETTINGS} | {"MONITOR_CONFIG"}
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k in names))
    try:
        toml = hashlib.sha256(Path(os.environ.get("MONITOR_CONFIG", "monitor.toml")).read_bytes()).hexdigest()
    except OSError:
        toml = None
    return (*env, ("monitor.toml", toml))


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


def reader() -> Engine:
    """The store for the pages' reads, which never wait for the jobs process's writes to finish."""
    return for_reading(engine())


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
    name: str | None  # None: nobody signed in
    role: str | None
    how: str  # "demo" | PROXY | OIDC | "none"
    sign_in: str | None = None  # how this dashboard signs people in: PROXY, OIDC, or None (read-only)
    problem: str | None = None  # why nobody is signed in although someone tried (shown on the page)

    @property
    def may_activate(self) -> bool:
        return self.name is not None and self.role in ACTIVATING_ROLES

    @property
    def may_acknowledge(self) -> bool:
        return self.name is not None and self.role in ACKNOWLEDGING_ROLES

    @property
    def may_export(self) -> bool:
        return self.name is not None and self.role in EXPORTING_ROLES

    @property
    def may_run_checks(self) -> bool:
        return self.name is not None and self.role in RUNNING_ROLES

    def why_not(self, what: str, who_may: str = "support or admin") -> str:
        if self.name is None:
            return f"Read-only: nobody is signed in, so nobody may {what}."
        return f"{self.name} ({self.role or 'not in OPERATOR_ROLES'}) may not {what}; {who_may} may."


def oidc_configured() -> bool:
    """Whether Streamlit's secrets (`.streamlit/secrets.toml`, or `secrets.files`) have an `[auth]` section."""
    try:
        return bool(st.secrets.load_if_toml_exists() and "auth" in st.secrets)
    except Exception:  # noqa: BLE001 - an unreadable secrets file means no sign-in, never a crash
        return False


def sign_in_method(cfg: Config) -> str | None:
    """PROXY when TRUSTED_PROXY_HEADER is set (then it is the only way in), else OIDC when Streamlit's
    secrets have `[auth]`, else None."""
    if cfg.trusted_proxy_header:
        return PROXY
    return OIDC if oidc_configured() else None


def _identity(value: object) -> tuple[str | None, str | None]:
    """An identity as given, or (None, why not). Never normalised into someone else: a name with invisible,
    control or space characters, or with a character that lower-cases to ASCII (the Kelvin sign K becomes
    k), is refused rather than cleaned, since OPERATOR_ROLES is matched case-insensitively."""
    name = str(value or "").strip()
    if not name:
        return None, None
    if len(name) > MAX_OPERATOR:
        return None, f"the identity is longer than {MAX_OPERATOR} characters"
    for c in name:
        if c.isspace() or unicodedata.category(c)[0] == "C" or (not c.isascii() and c.lower().isascii()):
            return (
                None,
                f"the identity {short(name, 80)!r} holds a character U+{ord(c):04X} that is not allowed",
            )
    return name, None


class _Headers(Protocol):
    def get_all(self, key: str) -> list[str]: ...


def _proxy_sent_secret(cfg: Config, headers: _Headers) -> str | None:
    """None when the request carries TRUSTED_PROXY_SECRET exactly once in TRUSTED_PROXY_SECRET_HEADER, else
    why not, in words that never repeat what was sent. The comparison takes the same time however much of
    a guess is right (hmac.compare_digest), so the secret cannot be found a character at a time."""
    name = cfg.trusted_proxy_secret_header
    sent = [v for v in headers.get_all(name) if v]
    if not sent:
        return f"the request carries no {name} header: open the dashboard through the sign-in proxy"
    if len(sent) > 1:
        # Two copies: the proxy appended its own to a client's instead of replacing it. Trust neither.
        return f"the request carries {name} more than once: the proxy must replace clients' copies"
    secret = cfg.trusted_proxy_secret
    if not secret:  # load() refuses TRUSTED_PROXY_HEADER without it; a Config made by hand may lack it
        return "TRUSTED_PROXY_SECRET is not set, so no request is trusted to name the operator"
    if not hmac.compare_digest(sent[0].encode("utf-8", "replace"), secret.encode("utf-8", "replace")):
        return f"the request's {name} is not the sign-in proxy's secret: open the dashboard through the proxy"
    return None


def proxy_identity(cfg: Config, headers: _Headers) -> tuple[str | None, str | None]:
    """The operator the sign-in proxy names in TRUSTED_PROXY_HEADER, or (None, why not). The header counts
    only on a request that carries the proxy's shared secret (see _proxy_sent_secret), and only once."""
    problem = _proxy_sent_secret(cfg, headers)
    if problem:
        return None, problem
    header = cfg.trusted_proxy_header or ""
    values = [v.strip() for v in headers.get_all(header) if v.strip()]
    if not values:
        return None, f"the request carries no {header} header: open the dashboard through the sign-in proxy"
    if len(values) > 1 or "," in values[0]:
        # A proxy that appends instead of replacing lets a client's own copy through: trust neither.
        return None, f"the request carries {header} more than once: the proxy must replace clients' copies"
    return _identity(values[0])


def _from_proxy(cfg: Config) -> tuple[str | None, str | None]:
    # st.context.headers: the headers of the request that opened this session's WebSocket, which the proxy
    # forwards like any other request.
    return proxy_identity(cfg, st.context.headers)


def _from_oidc() -> tuple[str | None, str | None]:
    user = st.user
    if not user.get("is_logged_in"):
        return None, None
    email, problem = _identity(user.get("email"))
    if email is None:
        return (
            None,
            problem or "the identity provider gave no e-mail address, which OPERATOR_ROLES would name",
        )
    if user.get("email_verified") is False:
        return None, f"the identity provider has not verified {email}"
    return email, None


def operator() -> Operator:
    """The person acting in this session, looked up again at every rerun. Each monitor action checks the
    role again itself."""
    cfg = config()
    name = demo.operator(cfg)
    if name is not None:
        return Operator(name, role_of(cfg, name), "demo")
    method = sign_in_method(cfg)
    if method is None:
        return Operator(None, None, "none")
    name, problem = _from_proxy(cfg) if method == PROXY else _from_oidc()
    if name is None:
        return Operator(None, None, "none", method, problem)
    return Operator(name, role_of(cfg, name), method, method)


# --- the demo, brought up to date once per process -----------------------------------------------


@st.cache_resource(show_spinner=False)
def _demo_once(db: tuple) -> dict:
    return {"lock": threading.Lock(), "done": False}


def bring_demo_up_to_date() -> None:
    """In demo mode, once per server process: sync, reconcile and probe when the data is stale
    (monitor.demo.needs_refresh), so the first screen shows the demo's incident as it is now. Never a
    scheduler: one run, on the first view."""
    cfg = config()
    if not demo.active(cfg):
        return
    state = _demo_once(key())
    if state["done"]:
        return
    with state["lock"]:
        if state["done"]:
            return
        if demo.needs_refresh(cfg, engine(), now=now_utc()):
            with st.status("Demo mode: syncing, reconciling and probing once…", expanded=True) as box:
                bar = st.progress(0.0)

                def progress(step: str, fraction: float) -> None:
                    bar.progress(min(max(fraction, 0.0), 1.0), text=md_escape(step))

                try:
                    actions.run_checks_now(cfg, progress, operator=demo.operator(cfg))
                except MonitorError as e:
                    box.update(label="Demo refresh failed", state="error")
                    st.error(md_escape(cfg.mask(str(e)), None))
                else:
                    box.update(label="Demo data is up to date", state="complete", expanded=False)
            st.cache_data.clear()
        state["done"] = True


# --- the page frame -------------------------------------------------------------------------------


def _error_details(cfg: Config) -> None:
    """Full error details (message and traceback) where monitor.demo.shows_error_details allows them;
    elsewhere only the exception's type, so an unexpected error never shows a customer's data or a setting
    in the browser. `.streamlit/config.toml` says "type" too, for anything that fails before a page gets
    here."""
    st.set_option("client.showErrorDetails", "full" if demo.shows_error_details(cfg) else "type")


def _sidebar(cfg: Config, who: Operator) -> None:
    mode = "demo (built-in emulator)" if demo.active(cfg) else ("live" if cfg.livemode else "test")
    with st.sidebar:
        st.caption(
            f"**Payment Parity Monitor**  \nStripe: {mode}  \nOperator: {md_code(who.name or 'nobody', 60)}"
            f"  \nRole: {md_escape(who.role or '-')}"
            + (f"  \nSigned in through: {md_escape(who.how)}" if who.name and who.how != "demo" else "")
        )
        if who.how == OIDC and st.button("Sign out", key="auth:sign-out", icon=":material/logout:"):
            st.logout()


def _sign_in_gate(cfg: Config, who: Operator) -> None:
    """With a sign-in configured, only people in OPERATOR_ROLES get past this point; the rest see why and
    nothing else. Without one (the demo has none), everyone reads and nobody acts."""
    if who.sign_in is None:
        return
    if who.name is None:
        if who.sign_in == OIDC:
            st.info(
                "**Sign in** to see payments and customers. Only people listed in `OPERATOR_ROLES` get in.",
                icon=":material/login:",
            )
            if who.problem:
                st.warning(f"Not signed in: {md_escape(who.problem, None)}.")
            if st.button("Sign in", key="auth:sign-in", type="primary", icon=":material/login:"):
                st.login()
        else:
            st.error(f"**Nobody is signed in**: {md_escape(who.problem or 'no operator', None)}.")
        st.stop()
    try:
        actions.authorize_view(engine(), cfg, who.name)
    except MonitorError as e:
        st.error(f"**Not allowed.** {md_escape(cfg.mask(str(e)), None)}", icon=":material/block:")
        st.stop()


def page(title: str, icon: str, intro: str | None = None) -> Operator:
    """Set up a page: config, title, the menu, the demo/read-only banner, the sign-in gate and the sidebar.
    Returns the operator. The tab's icon is a file served by the dashboard, never one fetched from the
    internet (ui.menu.FAVICON)."""
    st.set_page_config(
        page_title=f"{title} · Payment Parity Monitor", page_icon=str(menu.FAVICON), layout="wide"
    )
    cfg = config()
    _error_details(cfg)
    who = operator()
    _sidebar(cfg, who)
    st.title(f"{icon} {title}")
    if title == menu.ENTRIES[0][1]:  # Streamlit runs the Overview for a URL naming no page
        menu.say_if_unknown_page()
    if demo.active(cfg):
        st.info(
            f"**Demo mode**: the built-in Stripe emulator and the demo app database. You act as "
            f"**{who.name}** (role {who.role or 'none'}), with no sign-in. Set `STRIPE_API_KEY` for a "
            "real account.",
            icon=":material/science:",
        )
    elif who.sign_in is None:
        st.warning(
            "**Read-only**: no sign-in is configured, so nobody may activate, acknowledge, export or run the "
            "checks. Configure "
            "`st.login` or a sign-in proxy (see README, Security) to act.",
            icon=":material/lock:",
        )
    try:
        engine()
    except MonitorError as e:
        st.error(f"**The monitor's store cannot be opened.** {md_escape(cfg.mask(str(e)), None)}")
        st.stop()
    _sign_in_gate(cfg, who)
    if intro:
        st.caption(intro)
    bring_demo_up_to_date()
    _snapshot_banner(cfg)
    return who


@st.cache_data(ttl=10, show_spinner=False)
def _snapshot_status(db: tuple):
    from monitor import views

    return views.snapshot_status(reader())


def _snapshot_banner(cfg: Config) -> None:
    """On every page: what the Stripe snapshot lacks and what was therefore not judged."""
    status = _snapshot_status(key())
    if status.complete:
        return
    lines = [
        f"- **{md_escape(g.resource)}** never synced completely: {md_escape(cfg.mask(g.why()), 300)}"
        for g in status.state.missing
    ]
    lines += [
        f"- **{md_escape(g.resource)}** failed in the latest sync (older data shown): "
        f"{md_escape(cfg.mask(g.why()), 300)}"
        for g in status.state.failing
    ]
    lines += [
        f"- not judged: **{md_escape(kind)}**: {md_escape(cfg.mask(why), 300)}"
        for kind, why in sorted(status.held_back.items())
    ]
    st.warning(
        "**The Stripe snapshot is incomplete**: findings that need what is missing are held back, not "
        "reported.\n" + "\n".join(lines),
        icon=":material/report:",
    )
