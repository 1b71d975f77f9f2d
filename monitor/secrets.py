"""Secrets in what the monitor says: how to find the secret in a URL the way the library that opens it
reads it, and how to mask secrets in any text.

`monitor.config` decides which settings hold secrets; this module knows how to recognise and hide them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit


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
# `postgresql://u:p#w@h/db` or `…@[bad/db` differently from SQLAlchemy, or not at all. When the
# parser cannot read the URL, or reads its userinfo differently from "everything between `://` and the
# last `@`", that whole stretch is the secret.

REDIS_SCHEMES = ("redis", "rediss", "unix")
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
    if scheme in REDIS_SCHEMES:
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
