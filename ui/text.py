"""Text for the dashboard that does not need Streamlit: escaping hostile strings, shortening long ones,
money and time for people, and CSV that a spreadsheet cannot execute.

Every string that came from Stripe, a customer or the app's database is hostile: it is shown
through `st.text`, `st.code`, `st.dataframe`, or Markdown only after `md_escape`.
"""

from __future__ import annotations

import io
import math
import re
from datetime import UTC, datetime, timedelta

import pandas as pd

from monitor.rules.money import decimals, format_money, minor_units_per_major
from monitor.rules.timefmt import format_duration

# Every character Markdown (CommonMark + GitHub extensions) or Streamlit's own Markdown directives
# (`:red[…]`, `:material/icon:`, `$…$` for LaTeX) give meaning to, plus `<` and `>` so raw HTML stays text.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=&\"'])")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200b-\u200f\u202a-\u202e\u2066-\u2069]")
# A cell a spreadsheet would read as a formula (OWASP "CSV Injection"): =, +, -, @, tab, carriage return.
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def one_line(value: object) -> str:
    """`value` as one line of text: newlines become spaces; control and bidi-override characters go."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return _CONTROL.sub("", str(value).replace("\r\n", " ").replace("\n", " ").replace("\r", " "))


def short(value: object, limit: int = 120) -> str:
    """One line, cut to `limit` characters with an ellipsis (10,000-character names must not break a page)."""
    text = one_line(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def md_escape(value: object, limit: int | None = 300) -> str:
    """Text safe to put inside Markdown: one line, shortened, every special character backslash-escaped,
    so `**bold**`, `[link](javascript:…)`, `<img …>` and `:red[x]` are shown as typed."""
    text = one_line(value) if limit is None else short(value, limit)
    return _MD_SPECIAL.sub(r"\\\1", text)


def md_code(value: object, limit: int = 120) -> str:
    """Text as an inline code span: shown verbatim (no links, no Markdown, no Streamlit directives), for
    e-mails and ids inside a Markdown line. The fence is longer than any run of backticks in the text."""
    text = short(value, limit)
    if not text:
        return ""
    longest = max((len(m) for m in re.findall(r"`+", text)), default=0)
    fence = "`" * (longest + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def money(amount, currency) -> str:
    """'USD 149.00' from minor units; '' when there is no amount."""
    if amount is None or (not isinstance(amount, str) and pd.isna(amount)):
        return ""
    return format_money(int(amount), currency if isinstance(currency, str) else None)


def major(amount, currency) -> float | None:
    """Minor units as a number in major units (14900 usd -> 149.0), for sortable money columns."""
    if amount is None or pd.isna(amount) or not isinstance(currency, str) or not currency:
        return None
    return int(amount) / minor_units_per_major(currency)


def money_format(currencies) -> str:
    """A printf format with as many decimals as the currencies need (2 for usd, 0 for jpy, 3 for kwd)."""
    places = [decimals(c) for c in currencies if isinstance(c, str) and c]
    return f"%.{max(places) if places else 2}f"


def with_major(
    frame: pd.DataFrame, amount: str, currency: str = "currency", into: str | None = None
) -> pd.DataFrame:
    """`frame` with a major-unit column `into` (default: `amount` + '_major') beside minor-unit `amount`,
    and the currency upper-cased."""
    out = frame.copy()
    target = into or f"{amount}_major"
    if frame.empty:
        out[target] = pd.Series(dtype="float64")
        return out
    out[target] = [major(a, c) for a, c in zip(frame[amount], frame[currency], strict=True)]
    out[target] = out[target].astype("float64")
    out[currency] = frame[currency].map(lambda c: c.upper() if isinstance(c, str) else c)
    return out


def utc(value) -> str:
    """'2026-11-26 11:20 UTC', or '' for nothing."""
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if isinstance(value, str):
        try:
            value = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, pd.Timestamp):
        value = value.to_pydatetime()
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def age(seconds: float | None) -> str:
    """'3 min ago', or 'never'."""
    if seconds is None or pd.isna(seconds):
        return "never"
    return f"{format_duration(timedelta(seconds=seconds))} ago"


def neutralise_cell(value: object) -> object:
    """A cell a spreadsheet will show, never evaluate: a text starting with = + - @ tab or CR gets a
    leading apostrophe. Numbers stay numbers (a negative amount is not a formula)."""
    if isinstance(value, str) and value.startswith(_FORMULA_START):
        return "'" + value
    return value


def to_csv(frame: pd.DataFrame) -> bytes:
    """UTF-8 CSV of `frame` with every text cell (and header) neutralised against formula injection."""
    out = frame.copy()
    out.columns = [neutralise_cell(str(c)) for c in out.columns]
    for column in out.columns:
        if out[column].dtype == object or pd.api.types.is_string_dtype(out[column]):
            out[column] = out[column].map(neutralise_cell)
    buffer = io.StringIO()
    # CRLF line ends (RFC 4180): the csv writer then quotes every cell holding a CR or LF, so a "\r=…" in a
    # cell can never start a new row that a spreadsheet would read as a formula.
    out.to_csv(buffer, index=False, lineterminator="\r\n")
    return buffer.getvalue().encode("utf-8")


def too_long(what: str, length: int, limit: int, cap: int) -> str:
    """One line saying `what` is over `limit` characters. The box takes at most `cap` (more than `limit`, so
    a long paste is refused in words, never silently cut to a different search); at `cap` it may have been
    longer still."""
    count = f"{length:,}" if length < cap else f"{cap:,} or more"
    return f"{what} is too long: {count} characters, at most {limit}. Shorten it."
