"""Settings: one list of `Setting`s, parsed strictly from the environment and an optional `monitor.toml`.

Each `Setting` carries its name, meaning, default, parser and bounds; `load()` and README's table are both
generated from `SETTINGS`. The environment wins over `monitor.toml` (same keys in lower case). A bad value
raises `ConfigError` whose message is one line naming the setting, the value (secrets masked) and what is
expected; the CLI prints it and exits with status 2.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from monitor.secrets import REDIS_SCHEMES, mask_secrets, mask_url, mask_value, url_secrets


class ConfigError(Exception):
    """A setting has a value the monitor cannot use. The message is one line, safe to print."""


@dataclass(frozen=True)
class Setting:
    """One setting: what README's table says of it and how `load()` reads it.

    `parse(setting, value)` turns a value as given (stripped, never empty) into what `Config` holds, or
    raises ConfigError; an unset setting takes `default` (None: unset). `shown` is how README shows a
    default that is not a plain value; `bounds` are a number's inclusive limits."""

    name: str
    meaning: str
    parse: Callable[[Setting, str], Any]
    default: Any = None
    shown: str | None = None
    bounds: tuple[int, int] | None = None
    secret: bool = False

    @property
    def field(self) -> str:
        """The `Config` field this setting fills."""
        return self.name.lower()

    @property
    def shown_default(self) -> str:
        """The default as README's table shows it."""
        if self.shown is not None:
            return self.shown
        return "unset" if self.default is None else f"`{_as_written(self.default)}`"

    def read(self, raw: Mapping[str, str]) -> Any:
        """This setting's value in `raw` (the settings as given), parsed; its default when unset."""
        value = _nonempty(raw, self.name)
        return copy.copy(self.default) if value is None else self.parse(self, value)


def _as_written(value: Any) -> str:
    """A value as it would be given in the environment."""
    if isinstance(value, dict):
        return ",".join(f"{k}={v}" for k, v in value.items())
    return str(value)


def _nonempty(raw: Mapping[str, str], name: str) -> str | None:
    value = raw.get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


# --- parsers: (setting, value as given) -> the value Config holds, or ConfigError ---------------------


def _bad(setting: Setting, value: str, expected: str) -> ConfigError:
    shown = mask_value(value) if setting.secret else mask_url(value)
    return ConfigError(f"{setting.name}={shown!r} is not valid: expected {expected}")


def _text(setting: Setting, value: str) -> str:
    return value


def _list(setting: Setting, value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def _whole_number(setting: Setting, value: str) -> int:
    assert setting.bounds is not None
    low, high = setting.bounds
    if not re.fullmatch(r"\d+", value) or not low <= int(value) <= high:
        raise _bad(setting, value, f"a whole number from {low} to {high}")
    return int(value)


def _one_of(*choices: str) -> Callable[[Setting, str], str]:
    """A parser accepting one of `choices`, case-insensitive."""

    def parse(setting: Setting, value: str) -> str:
        if value.lower() not in choices:
            raise _bad(setting, value, " or ".join(choices))
        return value.lower()

    return parse


def _http_url(setting: Setting, value: str) -> str:
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:  # a lone `[` ("Invalid IPv6 URL"), a port that is not a number
        raise _bad(setting, value, "an http:// or https:// URL that can be parsed") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise _bad(setting, value, "an http:// or https:// URL")
    return value


def _api_base(setting: Setting, value: str) -> str:
    return _http_url(setting, value).rstrip("/")


def _db_url(setting: Setting, value: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except (ArgumentError, ValueError):
        raise _bad(setting, value, "an SQLAlchemy database URL such as sqlite:///data/app.db") from None
    if url.get_backend_name() not in ("sqlite", "postgresql"):
        raise _bad(setting, value, "a sqlite:// or postgresql:// URL")
    return value


def _stripe_key(setting: Setting, value: str) -> str:
    if not re.fullmatch(r"(sk|rk)_(test|live)_[A-Za-z0-9_]+", value):
        raise _bad(setting, value, "a Stripe secret key (sk_…) or restricted key (rk_…)")
    return value


def _schema(setting: Setting, value: str) -> str:
    if value in ("default", "djstripe"):
        return value
    if not value.endswith(".toml"):
        raise _bad(setting, value, "default, djstripe, or the path of a mapping .toml file")
    if not Path(value).is_file():
        raise ConfigError(f"{setting.name}={value!r} is not valid: no such mapping file")
    return value


def _redis_entry(part: str) -> tuple[str | None, str]:
    """One REDIS_URLS entry as (name, url); the name is None when the entry does not start with a plain
    name and `=` (`redis://:pw@h/0?ssl_cert_reqs=none` is a URL without a name, not a name)."""
    name, sep, url = part.strip().partition("=")
    if sep and re.fullmatch(r"[A-Za-z0-9_.-]+", name.strip()):
        return name.strip(), url.strip()
    return None, part.strip()


def parse_redis_urls(value: str) -> dict[str, str]:
    """`name=url,name=url` into an ordered dict; raises ValueError naming the bad part (masked)."""
    result: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        name, url = _redis_entry(part)
        if name is None:
            raise ValueError(f"{mask_url(url)!r} is not name=url")
        if "://" not in url or url.split("://")[0].lower() not in REDIS_SCHEMES:
            raise ValueError(f"{name}={mask_url(url)!r} is not a redis:// URL")
        found = url_secrets(url)
        if not found.parsed:
            raise ValueError(f"redis-py cannot parse {name}={found.shown!r}: {found.problem}")
        if name in result:
            raise ValueError(f"the name {name!r} appears twice")
        result[name] = url
    if not result:
        raise ValueError("no name=url given")
    return result


def _redis_urls(setting: Setting, value: str) -> dict[str, str]:
    try:
        return parse_redis_urls(value)
    except ValueError as e:
        shown = ",".join(_mask_named_url(p) for p in value.split(","))
        raise ConfigError(
            f"{setting.name}={shown!r} is not valid: {e}; expected comma-separated name=redis://host:port/db"
        ) from None


def _mask_named_url(part: str) -> str:
    name, url = _redis_entry(part)
    return mask_url(url) if name is None else f"{name}={mask_url(url)}"


ROLES = ("viewer", "finance", "support", "admin")


def _roles(setting: Setting, value: str) -> dict[str, str]:
    roles: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        operator, sep, role = part.strip().rpartition("=")
        if not sep or not operator.strip() or role.strip() not in ROLES:
            raise ConfigError(
                f"{setting.name}={value!r} is not valid: {part.strip()!r} is not operator=role with role one "
                f"of {', '.join(ROLES)}"
            )
        roles[operator.strip().lower()] = role.strip()
    return roles


def _header_name(example: str) -> Callable[[Setting, str], str]:
    """A parser accepting an HTTP header name; its message gives `example`."""

    def parse(setting: Setting, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9-]+", value):
            raise _bad(setting, value, f"an HTTP header name such as {example}")
        return value

    return parse


MIN_PROXY_SECRET = 16  # long enough not to be guessed


def _proxy_secret(setting: Setting, value: str) -> str:
    if len(value) < MIN_PROXY_SECRET:
        raise _bad(setting, value, f"a secret of {MIN_PROXY_SECRET} characters or more")
    return value


# --- the settings ------------------------------------------------------------------------------------

DEMO_APP_DATABASE_URL = "sqlite:///data/demo_app.db"
RATE_LIMITS = {"test": 20, "live": 80}  # STRIPE_RATE_LIMIT's default by the key's mode

# The one list of settings, in README's order. README.md's table is `settings_table()`; tests keep it so.
SETTINGS: tuple[Setting, ...] = (
    Setting(
        "STRIPE_API_KEY",
        "secret or restricted key; a read-only restricted key (`rk_…`) is enough, webhook replay included "
        "(it reads the event and signs it with WEBHOOK_SECRET)",
        _stripe_key,
        shown="unset: demo mode, the built-in Stripe emulator with the demo scenario",
        secret=True,
    ),
    Setting("STRIPE_API_BASE", "base URL of the Stripe API", _api_base, "https://api.stripe.com"),
    Setting(
        "MONITOR_DATABASE_URL",
        "SQLAlchemy URL of the monitor's own store",
        _db_url,
        "sqlite:///data/monitor.db",
    ),
    Setting(
        "APP_DATABASE_URL",
        "SQLAlchemy URL of the app's database",
        _db_url,
        shown=f"demo: `{DEMO_APP_DATABASE_URL}`; otherwise required",  # see _apply_rules
    ),
    Setting(
        "APP_SCHEMA", "mapping preset (`default`, `djstripe`) or path to a mapping TOML", _schema, "default"
    ),
    Setting(
        "EXPECTED_WEBHOOK_URL",
        "the URL where Stripe must deliver",
        _http_url,
        shown='unset: the endpoint check says "not configured"',
    ),
    Setting(
        "WEBHOOK_SECRET", "that endpoint's signing secret, used by the replay repair", _text, secret=True
    ),
    Setting(
        "REDIS_URLS",
        "comma-separated `name=url`, e.g. `channels=redis://localhost:6379/0,celery=redis://…`",
        _redis_urls,
        {"channels": "redis://localhost:6379/0"},
    ),
    Setting(
        "PAYMENT_SCOPE",
        "`all`: every payment needs a subscription row; `subscriptions`: only subscription-mode Checkout "
        "Sessions and subscription invoices do (one-off purchases are not judged)",
        _one_of("all", "subscriptions"),
        "all",
    ),
    Setting(
        "GRACE_MINUTES",
        "how long a paid payment may lack its subscription, or an event its delivery, before it is a finding",
        _whole_number,
        10,
        bounds=(0, 7 * 24 * 60),
    ),
    Setting(
        "SYNC_INTERVAL",
        "seconds between scheduled sync + reconcile runs of `python -m jobs`",
        _whole_number,
        300,
        bounds=(1, 24 * 3600),
    ),
    Setting(
        "PROBE_INTERVAL",
        "seconds between scheduled probe runs; the scheduler counts as down after twice this without a run",
        _whole_number,
        30,
        bounds=(1, 3600),
    ),
    Setting(
        "RETENTION_DAYS",
        "probe history and resolved findings older than this are deleted daily",
        _whole_number,
        90,
        bounds=(1, 3650),
    ),
    Setting(
        "OPERATOR_ROLES",
        "comma-separated `operator=role` with role `viewer`, `finance`, `support` or `admin`; only support "
        "and admin may activate",
        _roles,
        {},
        shown="unset: in demo mode every operator is `admin`; otherwise nobody may act",
    ),
    Setting(
        "ALERT_URLS",
        "comma-separated apprise URLs (`slack://…`, `mailto://…`, `json://host/path`, …) for alerts",
        _list,
        (),
        shown="unset: no alerts are sent (they are still recorded)",
        secret=True,
    ),
    Setting(
        "ALERTS_PER_HOUR",
        "cap on alert messages per hour; past it alerts are recorded, not sent",
        _whole_number,
        30,
        bounds=(1, 10_000),
    ),
    Setting(
        "METRICS_PORT",
        "port where `python -m jobs` serves Prometheus metrics on 127.0.0.1",
        _whole_number,
        shown="unset: off",
        bounds=(1, 65535),
    ),
    Setting(
        "TRUSTED_PROXY_HEADER",
        "request header naming the signed-in operator, set by an authenticating proxy such as oauth2-proxy "
        "(`X-Forwarded-Email`); trusted only on a request that also carries `TRUSTED_PROXY_SECRET`",
        _header_name("X-Forwarded-Email"),
        shown="unset: sign-in through `st.login` when `.streamlit/secrets.toml` has `[auth]`, else read-only",
    ),
    Setting(
        "TRUSTED_PROXY_SECRET",
        f"shared secret ({MIN_PROXY_SECRET} characters or more) the proxy sends in "
        "`TRUSTED_PROXY_SECRET_HEADER`, compared in constant time; required when `TRUSTED_PROXY_HEADER` is set",
        _proxy_secret,
        secret=True,
    ),
    Setting(
        "TRUSTED_PROXY_SECRET_HEADER",
        "request header carrying `TRUSTED_PROXY_SECRET`",
        _header_name("X-Proxy-Secret"),
        "X-Proxy-Secret",
    ),
    Setting(
        "STRIPE_RATE_LIMIT",
        "requests/s the sync may send to Stripe, across all its threads (Stripe allows 25 in test mode, 100 live)",
        _whole_number,
        shown=f"`{RATE_LIMITS['test']}` for test keys, `{RATE_LIMITS['live']}` for live keys",  # _apply_rules
        bounds=(1, 10_000),
    ),
)


@dataclass(frozen=True, repr=False)
class Config:
    """Parsed settings, one field per `Setting` (`Setting.field`), made by `load()` alone, so no field
    restates a default. `stripe_api_key` is None in demo mode. Its repr masks every secret."""

    stripe_api_key: str | None
    stripe_api_base: str
    monitor_database_url: str
    app_database_url: str
    app_schema: str
    expected_webhook_url: str | None
    webhook_secret: str | None
    redis_urls: dict[str, str]
    grace_minutes: int
    payment_scope: str
    sync_interval: int
    probe_interval: int
    retention_days: int
    operator_roles: dict[str, str]
    alert_urls: tuple[str, ...]
    alerts_per_hour: int
    metrics_port: int | None
    stripe_rate_limit: int | None  # None in demo mode: the in-process emulator needs no limit
    trusted_proxy_header: str | None
    trusted_proxy_secret: str | None
    trusted_proxy_secret_header: str
    secrets: tuple[str, ...]  # every secret the settings hold, for `mask`

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


# --- loading -----------------------------------------------------------------------------------------


def load(environ: Mapping[str, str] | None = None, toml_path: Path | None = None) -> Config:
    """Parse the settings; raise ConfigError for the first bad one, every secret given masked in it.

    Each setting is parsed on its own, in `SETTINGS` order; then `_apply_rules` applies the rules that
    join two settings."""
    raw = _raw_settings(os.environ if environ is None else environ, toml_path)
    try:
        values = {setting.field: setting.read(raw) for setting in SETTINGS}
        _apply_rules(values)
    except ConfigError as e:
        raise ConfigError(mask_secrets(str(e), find_secrets(raw))) from None
    return Config(**values, secrets=find_secrets(raw))


def _apply_rules(values: dict[str, Any]) -> None:
    """The rules no one setting can state, on the parsed values (by `Config` field):
    - APP_DATABASE_URL defaults to the demo app database in demo mode and is required otherwise;
    - STRIPE_RATE_LIMIT defaults by the key's mode (`RATE_LIMITS`), and to no limit in demo mode;
    - TRUSTED_PROXY_HEADER needs TRUSTED_PROXY_SECRET: a header alone can be sent by anyone who reaches
      the dashboard's port."""
    key = values["stripe_api_key"]
    if values["app_database_url"] is None:
        if key is not None:
            raise ConfigError(
                "APP_DATABASE_URL is not set: expected the SQLAlchemy URL of the app's database "
                "(required when STRIPE_API_KEY is set)"
            )
        values["app_database_url"] = DEMO_APP_DATABASE_URL
    if values["stripe_rate_limit"] is None and key is not None:
        values["stripe_rate_limit"] = RATE_LIMITS["live" if "_live_" in key else "test"]
    header = values["trusted_proxy_header"]
    if header is not None and values["trusted_proxy_secret"] is None:
        raise ConfigError(
            f"TRUSTED_PROXY_HEADER={header!r} is set but TRUSTED_PROXY_SECRET is not: expected the shared "
            "secret the proxy sends with every request (see docs/operations.md), without which anyone who "
            "reaches the dashboard could send the header"
        )


def read_toml(path: Path) -> dict[str, str]:
    """`monitor.toml` as upper-case keys with string values; a broken file is a ConfigError."""
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    known = {s.name for s in SETTINGS}
    result = {}
    for key, value in data.items():
        if key.upper() not in known:
            raise ConfigError(f"{path}: unknown setting {key!r}; known: {', '.join(sorted(known)).lower()}")
        result[key.upper()] = str(value)
    return result


def _raw_settings(env: Mapping[str, str], toml_path: Path | None, *, strict: bool = True) -> dict[str, str]:
    """The settings as given: `monitor.toml` (ignored when broken and not `strict`), then the environment."""
    try:
        raw = dict(read_toml(toml_path or Path(env.get("MONITOR_CONFIG", "monitor.toml"))))
    except ConfigError:
        if strict:
            raise
        raw = {}
    raw.update({k: v for k, v in env.items() if k in {s.name for s in SETTINGS}})
    return raw


# --- secrets in the settings as given ---------------------------------------------------------------


def _secrets_in(setting: Setting, value: str) -> list[str]:
    """The secrets in one setting's value, valid or not: a secret setting's value (each ALERT_URLS entry
    whole), and what `url_secrets` finds in a setting parsed as URLs."""
    if setting.secret:
        return [u.strip() for u in value.split(",")] if setting.parse is _list else [value]
    if setting.parse is _redis_urls:
        return [s for part in value.split(",") for s in url_secrets(_redis_entry(part)[1]).secrets]
    if setting.parse in (_http_url, _api_base, _db_url):
        return list(url_secrets(value).secrets)
    return []


def find_secrets(raw: Mapping[str, str]) -> tuple[str, ...]:
    """Every secret in the settings as given, whether or not they are valid."""
    found: list[str] = []
    for setting in SETTINGS:
        value = _nonempty(raw, setting.name)
        if value is not None:
            found += _secrets_in(setting, value)
    return tuple(dict.fromkeys(s for s in found if s))


def secrets_as_given(
    environ: Mapping[str, str] | None = None, toml_path: Path | None = None
) -> tuple[str, ...]:
    """`find_secrets` of the environment and `monitor.toml`, for masking what is said before `load`
    succeeds (or when it fails). Never raises."""
    return find_secrets(_raw_settings(os.environ if environ is None else environ, toml_path, strict=False))


def settings_table() -> str:
    """The settings as the Markdown table README.md shows."""
    lines = ["| variable | meaning | default |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.meaning} | {s.shown_default} |" for s in SETTINGS]
    return "\n".join(lines)
