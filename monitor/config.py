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
from urllib.parse import unquote, urlsplit


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
        "(`X-Forwarded-Email`); trusted only on a request that also carries `TRUSTED_PROXY_SECRET`",
        "unset: sign-in through `st.login` when `.streamlit/secrets.toml` has `[auth]`, else read-only",
    ),
    Setting(
        "TRUSTED_PROXY_SECRET",
        "shared secret (16 characters or more) the proxy sends in `TRUSTED_PROXY_SECRET_HEADER`, compared in "
        "constant time; required when `TRUSTED_PROXY_HEADER` is set",
        "unset",
        secret=True,
    ),
    Setting(
        "TRUSTED_PROXY_SECRET_HEADER",
        "request header carrying `TRUSTED_PROXY_SECRET`",
        "`X-Proxy-Secret`",
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
    trusted_proxy_secret: str | None = field(default=None, repr=False)
    trusted_proxy_secret_header: str = "X-Proxy-Secret"
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


# --- secrets in URLs --------------------------------------------------------------------------------
# One way to find the secret in a URL: ask the parser that will open it (redis-py for Redis, urllib for
# http, as requests does for credentials, SQLAlchemy for everything else), because urllib alone reads
# `postgresql://u:p#w@h/db` or `…@[bad/db` differently from SQLAlchemy, or not at all (issue 14). When the
# parser cannot read the URL, or reads its userinfo differently from "everything between `://` and the
# last `@`", that whole stretch is the secret.

_REDIS_SCHEMES = ("redis", "rediss", "unix")
# Query parameters that carry credentials: libpq's password and sslpassword, redis-py's password, and
# the tokens and keys other URLs carry.
_SECRET_QUERY_KEY = re.compile(r"pass|pwd|secret|token|key", re.I)
# SQLAlchemy's reading of `name://user:password@`, from sqlalchemy.engine.url._parse_url: the username
# stops at the first `:` or `/`, the password at the first `@`.
_SQLALCHEMY_USERINFO = re.compile(r"[\w+]+://[^:/]*:([^@]*)@")


@dataclass(frozen=True)
class UrlSecrets:
    """What a URL holds that must never be shown (`secrets`), and the URL as it may be shown."""

    shown: str
    secrets: tuple[str, ...]
    parsed: bool  # False: the parser that opens such a URL cannot read it
    problem: str | None = None  # why not, when saying so cannot show a piece of a password


def _span_of_password_urllib(url: str) -> tuple[int, int] | None:
    """Where urllib's password is in `url` (urllib takes the userinfo up to the last `@` of the netloc)."""
    parts = urlsplit(url)
    parts.port  # noqa: B018 - raises ValueError for a port that is not a number, as the parsers do
    userinfo, at, _ = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    if not at or not colon:
        return None
    start = url.index("://") + 3 + len(user) + 1
    if url[start : start + len(password)] != password:  # urllib dropped a tab or newline on the way
        raise ValueError("the password is not where urllib read it")
    return start, start + len(password)


def _parse_password(url: str) -> tuple[tuple[int, int] | None, str | None, str | None]:
    """(span of the password as written, the password as the opener decodes it, a password the opener
    takes from the query). Raises ValueError when the opener cannot read `url`."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    if scheme in _REDIS_SCHEMES:
        from redis.connection import parse_url

        kwargs = parse_url(url)
        span = _span_of_password_urllib(url)
        return span, kwargs.get("password") if span else None, None if span else kwargs.get("password")
    if scheme in ("http", "https"):
        span = _span_of_password_urllib(url)
        return span, unquote(url[span[0] : span[1]]) if span else None, None
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except ArgumentError as e:
        raise ValueError(str(e)) from None
    query_password = parsed.query.get("password")
    query_password = query_password if isinstance(query_password, str) else None
    if parsed.password is None:
        return None, None, query_password
    m = _SQLALCHEMY_USERINFO.match(url)
    if m is None:  # not SQLAlchemy's reading after all: treat as unreadable, the fallback masks it
        raise ValueError("userinfo not found")
    return m.span(1), parsed.password, query_password


def _query_spans(url: str) -> list[tuple[int, int]]:
    """Where the values of credential-like query parameters are in `url`."""
    spans = []
    for m in re.finditer(r"[?&;]([^=&;#]*)=([^&;#]*)", url):
        if _SECRET_QUERY_KEY.search(m.group(1)) and m.group(2):
            spans.append(m.span(2))
    return spans


def url_secrets(url: str) -> UrlSecrets:
    """The secrets of `url` and its masked form: see the comment above."""
    last_at = url.rfind("@")
    if "://" not in url:  # no URL at all (a bad setting's value): shown without what may be userinfo
        return UrlSecrets("****" + url[last_at:] if last_at > 0 else url, (), False, "no scheme://")
    start = url.find("://") + 3
    region = (start, last_at) if last_at > start else None  # "everything between :// and the last @"
    problem = None
    try:
        span, decoded, query_password = _parse_password(url)
        parsed = True
    except ValueError as e:  # urllib's "Invalid IPv6 URL", a port that is no number, an unreadable URL
        span, decoded, query_password, parsed = None, None, None, False
        problem = " ".join(str(e).split()) or type(e).__name__
        # A parser's message may quote what it took for a port or a host: a piece of the password.
        pieces = re.split(r"[:@/?#\[\]]", url[start:last_at]) if region else []
        if any(piece and piece in problem for piece in pieces):
            problem = "is a character such as #, /, ? or [ in its userinfo not percent-encoded?"
    spans = _query_spans(url)
    secrets = [decoded, query_password, *(url[a:b] for a, b in spans)]
    if region is not None:
        userinfo = url[region[0] : region[1]]
        if not parsed or (span is None and ":" in userinfo) or (span is not None and span[1] != region[1]):
            # Unreadable, or read differently (`u:p@w@h`: SQLAlchemy's password is `p`, its host `w@h`):
            # the whole userinfo, its password part and what the parser took for more than userinfo.
            secrets += [userinfo, userinfo.partition(":")[2]]
            if span is not None:
                secrets.append(url[span[1] + 1 : region[1]])
            span = region
    if span is not None:
        secrets.append(url[span[0] : span[1]])
        spans.append(span)
    merged: list[list[int]] = []  # the spans to mask, overlapping ones joined (`@` in a query)
    for a, b in sorted(s for s in spans if s[1] > s[0]):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    shown = url
    for a, b in reversed(merged):
        shown = shown[:a] + "****" + shown[b:]
    return UrlSecrets(shown, tuple(dict.fromkeys(s for s in secrets if s)), parsed, problem)


def mask_url(url: str) -> str:
    """A URL with any password (or, when its opener cannot read it, its whole userinfo) as `****`."""
    return url_secrets(url).shown


def _mask_kind(secret: str) -> str:
    # Keys and signing secrets stay recognisable by their kind and last four characters; a password or
    # a URL shows nothing of itself.
    if re.fullmatch(r"(sk|rk|whsec)_[A-Za-z0-9_]+", secret):
        return mask_value(secret)
    return "****"


def mask_secrets(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every one of `secrets` in it masked, the longest first."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, _mask_kind(secret))
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
    try:
        parts = urlsplit(value)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:  # a lone `[` ("Invalid IPv6 URL"), a port that is not a number
        raise _bad(name, value, "an http:// or https:// URL that can be parsed") from None
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
        if "://" not in url or url.split("://")[0].lower() not in _REDIS_SCHEMES:
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


def _mask_named_url(part: str) -> str:
    name, url = _redis_entry(part)
    return mask_url(url) if name is None else f"{name}={mask_url(url)}"


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


def _parse_header_name(raw: Mapping[str, str], name: str, default: str | None, example: str) -> str | None:
    value = _nonempty(raw, name) or default
    if value is not None and not re.fullmatch(r"[A-Za-z0-9-]+", value):
        raise _bad(name, value, f"an HTTP header name such as {example}")
    return value


MIN_PROXY_SECRET = 16


def _parse_proxy_secret(raw: Mapping[str, str], header: str | None) -> str | None:
    """TRUSTED_PROXY_SECRET: required with TRUSTED_PROXY_HEADER (a header alone can be sent by anyone who
    reaches the dashboard's port), and long enough not to be guessed."""
    value = _nonempty(raw, "TRUSTED_PROXY_SECRET")
    if header is not None and value is None:
        raise ConfigError(
            f"TRUSTED_PROXY_HEADER={header!r} is set but TRUSTED_PROXY_SECRET is not: expected the shared "
            "secret the proxy sends with every request (see docs/operations.md), without which anyone who "
            "reaches the dashboard could send the header"
        )
    if value is not None and len(value) < MIN_PROXY_SECRET:
        raise _bad(
            "TRUSTED_PROXY_SECRET", value, f"a secret of {MIN_PROXY_SECRET} characters or more", secret=True
        )
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


# The settings whose values are URLs, each masked through `url_secrets`; REDIS_URLS holds several.
URL_SETTINGS = ("STRIPE_API_BASE", "MONITOR_DATABASE_URL", "APP_DATABASE_URL", "EXPECTED_WEBHOOK_URL")


def find_secrets(raw: Mapping[str, str]) -> tuple[str, ...]:
    """Every secret in the settings as given, whether or not they are valid: the secret settings' values
    (each ALERT_URLS entry whole) and what `url_secrets` finds in every URL setting."""
    found: list[str] = []
    for setting in SETTINGS:
        value = _nonempty(raw, setting.name)
        if value is None:
            continue
        if setting.name == "ALERT_URLS":
            found += [u.strip() for u in value.split(",")]
        elif setting.secret:
            found.append(value)
        elif setting.name == "REDIS_URLS":
            for part in value.split(","):
                found += url_secrets(_redis_entry(part)[1]).secrets
        elif setting.name in URL_SETTINGS:
            found += url_secrets(value).secrets
    return tuple(dict.fromkeys(s for s in found if s))


def _raw_settings(env: Mapping[str, str], toml_path: Path | None, *, strict: bool = True) -> dict[str, str]:
    """The settings as given: `monitor.toml` (ignored when broken and not `strict`), then the environment."""
    try:
        raw = dict(read_toml(toml_path or Path(env.get("MONITOR_CONFIG", "monitor.toml"))))
    except ConfigError:
        if strict:
            raise
        raw = {}
    raw.update({k: v for k, v in env.items() if k in {s.name for s in SETTINGS} | EXTRA_SETTINGS})
    return raw


def secrets_as_given(
    environ: Mapping[str, str] | None = None, toml_path: Path | None = None
) -> tuple[str, ...]:
    """`find_secrets` of the environment and `monitor.toml`, for masking what is said before `load`
    succeeds (or when it fails). Never raises."""
    return find_secrets(_raw_settings(os.environ if environ is None else environ, toml_path, strict=False))


def load(environ: Mapping[str, str] | None = None, toml_path: Path | None = None) -> Config:
    """Parse the settings; raise ConfigError for the first bad one, every secret given masked in it."""
    raw = _raw_settings(os.environ if environ is None else environ, toml_path)
    try:
        return _parse(raw)
    except ConfigError as e:
        raise ConfigError(mask_secrets(str(e), find_secrets(raw))) from None


def _parse(raw: Mapping[str, str]) -> Config:
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
    proxy_header = _parse_header_name(raw, "TRUSTED_PROXY_HEADER", None, "X-Forwarded-Email")
    proxy_secret = _parse_proxy_secret(raw, proxy_header)
    secrets = [key, webhook_secret, proxy_secret, *alert_urls]
    secrets += find_secrets(raw)
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
        trusted_proxy_header=proxy_header,
        trusted_proxy_secret=proxy_secret,
        trusted_proxy_secret_header=_parse_header_name(
            raw, "TRUSTED_PROXY_SECRET_HEADER", "X-Proxy-Secret", "X-Proxy-Secret"
        ),
        metrics_port=_parse_int(raw, "METRICS_PORT", 0, 1, 65535) if _nonempty(raw, "METRICS_PORT") else None,
        secrets=tuple(s for s in secrets if s),
    )


def settings_table() -> str:
    """The settings as the Markdown table README.md shows."""
    lines = ["| variable | meaning | default |", "|---|---|---|"]
    lines += [f"| `{s.name}` | {s.meaning} | {s.default} |" for s in SETTINGS]
    return "\n".join(lines)
