"""Settings: one table, parsed strictly from the environment and an optional `monitor.toml`.

The environment wins over `monitor.toml` (same keys in lower case). A bad value raises `ConfigError`
whose message is one line naming the setting, the value (secrets masked) and what is expected; the CLI
prints it and exits with status 2.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit


class ConfigError(Exception):
    """A setting has a value the monitor cannot use. The message is one line, safe to print."""


@dataclass(frozen=True)
class Setting:
    name: str
    meaning: str
    default: str
    secret: bool = False


# The one table of settings. README.md documents each; tests/test_config.py keeps the two in step.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "STRIPE_API_KEY",
        "secret or restricted key; a read-only restricted key (`rk_…`) is enough, webhook replay included "
        "(it reads the event and signs it with WEBHOOK_SECRET)",
        "unset: demo mode, the built-in Stripe emulator with the demo scenario",
        secret=True,
    ),
    Setting("STRIPE_API_BASE", "base URL of the Stripe API", "`https://api.stripe.com`"),
    Setting(
        "MONITOR_DATABASE_URL", "SQLAlchemy URL of the monitor's own store", "`sqlite:///data/monitor.db`"
    ),
    Setting(
        "APP_DATABASE_URL",
        "SQLAlchemy URL of the app's database",
        "demo: `sqlite:///data/demo_app.db`; otherwise required",
        secret=False,
    ),
    Setting(
        "APP_SCHEMA",
        "mapping preset (`default`, `djstripe`) or path to a mapping TOML",
        "`default`",
    ),
    Setting(
        "EXPECTED_WEBHOOK_URL",
        "the URL where Stripe must deliver",
        'unset: the endpoint check says "not configured"',
    ),
    Setting(
        "WEBHOOK_SECRET", "that endpoint's signing secret, used by the replay repair", "unset", secret=True
    ),
    Setting(
        "REDIS_URLS",
        "comma-separated `name=url`, e.g. `channels=redis://localhost:6379/0,celery=redis://…`",
        "`channels=redis://localhost:6379/0`",
    ),
    Setting(
        "PAYMENT_SCOPE",
        "`all`: every payment needs a subscription row; `subscriptions`: only subscription-mode Checkout "
        "Sessions and subscription invoices do (one-off purchases are not judged)",
        "`all`",
    ),
    Setting(
        "GRACE_MINUTES",
        "how long a paid payment may lack its subscription, or an event its delivery, before it is a finding",
        "`10`",
    ),
    Setting("SYNC_INTERVAL", "seconds between scheduled sync + reconcile runs of `python -m jobs`", "`300`"),
    Setting(
        "PROBE_INTERVAL",
        "seconds between scheduled probe runs; the scheduler counts as down after twice this without a run",
        "`30`",
    ),
    Setting(
        "RETENTION_DAYS", "probe history and resolved findings older than this are deleted daily", "`90`"
    ),
    Setting(
        "OPERATOR_ROLES",
        "comma-separated `operator=role` with role `viewer`, `finance`, `support` or `admin`; only support "
        "and admin may activate",
        "unset: in demo mode every operator is `admin`; otherwise nobody may act",
    ),
    Setting(
        "ALERT_URLS",
        "comma-separated apprise URLs (`slack://…`, `mailto://…`, `json://host/path`, …) for alerts",
        "unset: no alerts are sent (they are still recorded)",
        secret=True,
    ),
    Setting(
        "ALERTS_PER_HOUR", "cap on alert messages per hour; past it alerts are recorded, not sent", "`30`"
    ),
    Setting(
        "METRICS_PORT", "port where `python -m jobs` serves Prometheus metrics on 127.0.0.1", "unset: off"
    ),
    Setting(
        "TRUSTED_PROXY_HEADER",
        "request header naming the signed-in operator, set by an authenticating proxy such as oauth2-proxy "
        "(`X-Forwarded-Email`); safe only behind a proxy that strips clients' own copies of it",
        "unset: sign-in through `st.login` when `.streamlit/secrets.toml` has `[auth]`, else read-only",
    ),
    Setting(
        "STRIPE_RATE_LIMIT",
        "requests/s the sync may send to Stripe, across all its threads (Stripe allows 25 in test mode, 100 live)",
        "`20` for test keys, `80` for live keys",
    ),
)
ROLES = ("viewer", "finance", "support", "admin")

DEMO_APP_DATABASE_URL = "sqlite:///data/demo_app.db"
DEFAULT_MONITOR_DATABASE_URL = "sqlite:///data/monitor.db"
DEFAULT_STRIPE_API_BASE = "https://api.stripe.com"
DEFAULT_REDIS_URLS = "channels=redis://localhost:6379/0"


@dataclass(frozen=True, repr=False)
class Config:
    """Parsed settings. `stripe_api_key` is None in demo mode. Its repr masks every secret."""

    stripe_api_key: str | None
    stripe_api_base: str
    monitor_database_url: str
    app_database_url: str
    app_schema: str
    expected_webhook_url: str | None
    webhook_secret: str | None
    redis_urls: dict[str, str]
    grace_minutes: int
    payment_scope: str = "all"
    sync_interval: int = 300
    probe_interval: int = 30
    retention_days: int = 90
    operator_roles: dict[str, str] = field(default_factory=dict)
    alert_urls: tuple[str, ...] = ()
    alerts_per_hour: int = 30
    metrics_port: int | None = None
    stripe_rate_limit: int | None = None  # None in demo mode: the in-process emulator needs no limit
    trusted_proxy_header: str | None = None
    secrets: tuple[str, ...] = field(default=(), repr=False)

    @property
    def demo(self) -> bool:
        """Demo mode: no Stripe key, so the built-in emulator serves the demo scenario."""
        return self.stripe_api_key is None

    @property
    def livemode(self) -> bool | None:
        """True for a live key, False for a test key, None in demo mode."""
        if self.stripe_api_key is None:
            return None
        return "_live_" in self.stripe_api_key

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "secrets")
        return self.mask(f"Config({fields})")

    def mask(self, text: str) -> str:
        """`text` with every secret value this configuration holds masked."""
        return mask_secrets(text, self.secrets)


def mask_value(value: str) -> str:
    """A secret shown safely: its kind prefix and last four characters at most."""
    if len(value) <= 8:
        return "****"
    prefix = value.split("_", 2)
    head = "_".join(prefix[:2]) + "_" if len(prefix) == 3 and len(prefix[0]) <= 5 else ""
    return f"{head}…{value[-4:]}" if len(value) > 16 else f"{head}****"


def mask_url(url: str) -> str:
    """A URL with any password replaced by `****`."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)
    user = parts.username or ""
    return urlunsplit(parts._replace(netloc=f"{user}:****@{netloc[-1]}"))


def url_password(url: str) -> str | None:
    try:
        return urlsplit(url).password
    except ValueError:
        return None


def mask_secrets(text: str, secrets: tuple[str, ...]) -> str:
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, mask_value(secret) if len(secret) > 8 else "****")
    return text


def _nonempty(raw: Mapping[str, str], name: str) -> str | None:
    value = raw.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _bad(name: str, value: str, expected: str, secret: bool = False) -> ConfigError:
    shown = mask_value(value) if secret else mask_url(value)
    return ConfigError(f"{name}={shown!r} is not valid: expected {expected}")


def _parse_int(raw: Mapping[str, str], name: str, default: int, minimum: int, maximum: int) -> int:
    value = _nonempty(raw, name)
    if value is None:
        return default
    if not re.fullmatch(r"\d+", value) or not minimum <= int(value) <= maximum:
        raise _bad(name, value, f"a whole number from {minimum} to {maximum}")
    return int(value)


def _parse_choice(raw: Mapping[str, str], name: str, choices: tuple[str, ...]) -> str:
    """One of `choices` (case-insensitive); the first is the default."""
    value = _nonempty(raw, name)
    if value is None:
        return choices[0]
    if value.lower() not in choices:
        raise _bad(name, value, " or ".join(choices))
    return value.lower()


def _parse_http_url(raw: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = _nonempty(raw, name)
    if value is None:
        return default
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _bad(name, value, "an http:// or https:// URL")
    return value.rstrip("/") if name == "STRIPE_API_BASE" else value


def _parse_db_url(raw: Mapping[str, str], name: str, default: str | None) -> str | None:
    value = _nonempty(raw, name)
    if value is None:
        return default
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise _bad(name, value, "an SQLAlchemy database URL such as sqlite:///data/app.db") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise _bad(name, value, "a sqlite:// or postgresql:// URL")
    return value


def _parse_stripe_key(raw: Mapping[str, str]) -> str | None:
    value = _nonempty(raw, "STRIPE_API_KEY")
    if value is None:
        return None
    if not re.fullmatch(r"(sk|rk)_(test|live)_[A-Za-z0-9_]+", value):
        raise _bad(
            "STRIPE_API_KEY", value, "a Stripe secret key (sk_…) or restricted key (rk_…)", secret=True
        )
    return value


def parse_redis_urls(value: str) -> dict[str, str]:
    """`name=url,name=url` into an ordered dict; raises ValueError naming the bad part."""
    result: dict[str, str] = {}
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        name, sep, url = part.partition("=")
        name, url = name.strip(), url.strip()
        if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
            raise ValueError(f"{_mask_named_url(part)!r} is not name=url")
        if urlsplit(url).scheme not in ("redis", "rediss", "unix"):
            raise ValueError(f"{mask_url(url)!r} is not a redis:// URL")
        if name in result:
            raise ValueError(f"the name {name!r} appears twice")
        result[name] = url
    if not result:
        raise ValueError("no name=url given")
    return result


def _mask_named_url(part: str) -> str:
    name, sep, url = part.partition("=")
    return f"{name}={mask_url(url)}" if sep else mask_url(part)


def _parse_redis(raw: Mapping[str, str]) -> dict[str, str]:
    value = _nonempty(raw, "REDIS_URLS") or DEFAULT_REDIS_URLS
    try:
        return parse_redis_urls(value)
    except ValueError as e:
        shown = ",".join(_mask_named_url(p) for p in value.split(","))
        raise ConfigError(
            f"REDIS_URLS={shown!r} is not valid: {e}; expected comma-separated name=redis://host:port/db"
        ) from None


def _parse_roles(raw: Mapping[str, str]) -> dict[str, str]:
    value = _nonempty(raw, "OPERATOR_ROLES")
    roles: dict[str, str] = {}
    for part in (value or "").split(","):
        if not part.strip():
            continue
        operator, sep, role = part.strip().rpartition("=")
        if not sep or not operator.strip() or role.strip() not in ROLES:
            raise ConfigError(
                f"OPERATOR_ROLES={value!r} is not valid: {part.strip()!r} is not operator=role with role one of "
                f"{', '.join(ROLES)}"
            )
        roles[operator.strip().lower()] = role.strip()
    return roles


def _parse_header_name(raw: Mapping[str, str]) -> str | None:
    value = _nonempty(raw, "TRUSTED_PROXY_HEADER")
    if value is not None and not re.fullmatch(r"[A-Za-z0-9-]+", value):
        raise _bad("TRUSTED_PROXY_HEADER", value, "an HTTP header name such as X-Forwarded-Email")
    return value


def _parse_schema(raw: Mapping[str, str]) -> str:
    value = _nonempty(raw, "APP_SCHEMA") or "default"
    if value in ("default", "djstripe"):
        return value
    if not value.endswith(".toml"):
        raise _bad("APP_SCHEMA", value, "default, djstripe, or the path of a mapping .toml file")
    if not Path(value).is_file():
        raise ConfigError(f"APP_SCHEMA={value!r} is not valid: no such mapping file")
    return value


def read_toml(path: Path) -> dict[str, str]:
    """`monitor.toml` as upper-case keys with string values; a broken file is a ConfigError."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    known = {s.name for s in SETTINGS} | EXTRA_SETTINGS
    result = {}
    for key, value in data.items():
        if key.upper() not in known:
            raise ConfigError(f"{path}: unknown setting {key!r}; known: {', '.join(sorted(known)).lower()}")
        result[key.upper()] = str(value)
    return result


# Settings added by later parts register here so `monitor.toml` accepts them.
EXTRA_SETTINGS: set[str] = set()


def load(environ: Mapping[str, str] | None = None, toml_path: Path | None = None) -> Config:
    """Parse the settings; raise ConfigError for the first bad one."""
    env = os.environ if environ is None else environ
    raw: dict[str, str] = dict(read_toml(toml_path or Path(env.get("MONITOR_CONFIG", "monitor.toml"))))
    raw.update({k: v for k, v in env.items() if k in {s.name for s in SETTINGS} | EXTRA_SETTINGS})
    key = _parse_stripe_key(raw)
    app_url = _parse_db_url(raw, "APP_DATABASE_URL", DEMO_APP_DATABASE_URL if key is None else None)
    if app_url is None:
        raise ConfigError(
            "APP_DATABASE_URL is not set: expected the SQLAlchemy URL of the app's database "
            "(required when STRIPE_API_KEY is set)"
        )
    redis = _parse_redis(raw)
    webhook_secret = _nonempty(raw, "WEBHOOK_SECRET")
    monitor_url = _parse_db_url(raw, "MONITOR_DATABASE_URL", DEFAULT_MONITOR_DATABASE_URL)
    alert_urls = tuple(u.strip() for u in (_nonempty(raw, "ALERT_URLS") or "").split(",") if u.strip())
    secrets = [key, webhook_secret, *alert_urls]
    secrets += [url_password(u) for u in (*redis.values(), app_url, monitor_url)]
    return Config(
        stripe_api_key=key,
        stripe_api_base=_parse_http_url(raw, "STRIPE_API_BASE", DEFAULT_STRIPE_API_BASE),
        monitor_database_url=monitor_url,
        app_database_url=app_url,
        app_schema=_parse_schema(raw),
        expected_webhook_url=_parse_http_url(raw, "EXPECTED_WEBHOOK_URL", None),
        webhook_secret=webhook_secret,
        redis_urls=redis,
        grace_minutes=_parse_int(raw, "GRACE_MINUTES", 10, 0, 7 * 24 * 60),
        payment_scope=_parse_choice(raw, "PAYMENT_SCOPE", ("all", "subscriptions")),
        sync_interval=_parse_int(raw, "SYNC_INTERVAL", 300, 1, 24 * 3600),
        probe_interval=_parse_int(raw, "PROBE_INTERVAL", 30, 1, 3600),
        retention_days=_parse_int(raw, "RETENTION_DAYS", 90, 1, 3650),
        operator_roles=_parse_roles(raw),
        alert_urls=alert_urls,
        alerts_per_hour=_parse_int(raw, "ALERTS_PER_HOUR", 30, 1, 10_000),
        stripe_rate_limit=_parse_int(
            raw, "STRIPE_RATE_LIMIT", 80 if key and "_live_" in key else 20, 1, 10_000
        )
        if key or _nonempty(raw, "STRIPE_RATE_LIMIT")
        else None,
        trusted_proxy_header=_parse_header_name(raw),
        metrics_port=_parse_int(raw, "METRICS_PORT", 0, 1, 65535) if _nonempty(raw, "METRICS_PORT") else None,
        secrets=tuple(s for s in secrets if s),
    )


def settings_table() -> str:
    """The settings as the Markdown table README.md shows."""
    lines = ["| variable | meaning | default |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.meaning} | {s.default} |" for s in SETTINGS]
    return "\n".join(lines)
