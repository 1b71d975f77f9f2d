"""Alert text: the monitor's words and the data inside them, rendered for each target's markup. Pure.

Customer- and Stripe-supplied text (e-mails, ids, hints, error texts) is data, never markup: an
alert is built as `Text`, the monitor's words and `Data` fields apart. When it is rendered, each field is made
one line, capped and escaped for the target's markup (`MARKUPS`, by the scheme of apprise's form of the URL:
monitor.alerts.markup_for); the whole message is capped to what every target accepts (`cap_message`).
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

# Caps, in characters. A field is cut with "…"; a message at whole lines, saying how many it left out.
NAME_CAP = 120  # an e-mail, a name, an id, an amount
DETAIL_CAP = 200  # an error text, a probe's detail, a list of rows
HINT_CAP = 500  # a root-cause hint: the monitor's sentences around app strings (the demo's longest: ~410)
TITLE_CAP = 150  # Slack's limit for a header block's text
MESSAGE_CAP = 3000  # Slack's limit for a section block's text; every target gets the same


@dataclass(frozen=True)
class Data:
    """A string from Stripe, the app's database or a probe, inside an alert's text."""

    value: str
    cap: int = DETAIL_CAP


Text = tuple[str | Data, ...]  # the monitor's own words and data fields, in order


def one_line(value: str) -> str:
    """`value` as one line of visible text: control and format characters (newlines, terminal escapes,
    bidirectional overrides) become spaces, and runs of spaces one, so that a field cannot add a line such
    as "Fix: …" to an alert or reorder what a reader sees."""
    text = "".join(" " if unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp") else c for c in value)
    return " ".join(text.split())


def cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _field(value: str, limit: int) -> str:
    """A field one line and at most `limit` characters long; a huge value costs no more than a long one."""
    line = one_line(value[: 8 * limit])
    if len(line) <= limit and len(value) <= 8 * limit:
        return line
    return line[: limit - 1].rstrip() + "…"


def plain_data(text: str) -> str:
    """Targets that show text as text, or whose markup apprise writes from the plain-text body itself: e-mail
    (HTML-escaped in an HTML part), JSON, Teams and other markdown-only services (backslash-escaped)."""
    return text


_ANGLES = str.maketrans({"<": "\u2039", ">": "\u203a"})  # ‹ ›


def slack_data(text: str) -> str:
    """Slack. apprise sends the plain-text body with `mrkdwn` off and `&`, `<`, `>` as entities
    (NotifySlack.dialect_convert in apprise 2.3), so *bold*, `code` and `&…;` in data show as typed, and
    entities of our own would arrive escaped twice (`&amp;lt;`). Angle brackets become ‹ › so that no
    `<!channel>`, `<@U…>` or `<http://…|label>` can form even when the URL's `format=markdown` makes apprise
    write mrkdwn from the text, which leaves a `<` raw."""
    return text.translate(_ANGLES)


_MARKDOWN = re.compile(r"[\\`*~|\[\]]|(?<![0-9A-Za-z])_|_(?![0-9A-Za-z])")  # `_` inside a word is no emphasis
_MENTION = re.compile(r"(?<!\w)@")  # @channel, @all, @here, @everyone; an e-mail's @ follows a word


def markdown_data(text: str) -> str:
    """Chat services that render markdown and mentions in the text apprise passes them unchanged (Mattermost,
    Discord, Guilded, Zulip): markdown control characters are backslash-escaped (they render as typed), angle
    brackets become ‹ › (Mattermost turns Slack's `<url|label>` and `<!channel>` into links and mentions
    before its markdown runs), and a word joiner after a leading @ keeps a mention from notifying anyone."""
    text = _MARKDOWN.sub(lambda m: "\\" + m.group(0), text.translate(_ANGLES))
    return _MENTION.sub("@\u2060", text)


# The escaping for the services that render markup in the text apprise gives them, by apprise's URL scheme;
# every other target gets plain_data.
MARKUPS: dict[str, Callable[[str], str]] = {
    "slack": slack_data,
    **dict.fromkeys(("mmost", "mmosts", "discord", "guilded", "zulip"), markdown_data),
}


def as_text(text: Text | str) -> Text:
    return (text,) if isinstance(text, str) else text


def render(text: Text | str, markup: Callable[[str], str] = plain_data) -> str:
    """`text` for one target: the monitor's words as written, each field one line, capped and escaped."""
    return "".join(p if isinstance(p, str) else markup(_field(p.value, p.cap)) for p in as_text(text))


def cap_message(body: str, limit: int = MESSAGE_CAP) -> str:
    """`body` within `limit` characters: whole lines from the top, then one line saying how many were cut."""
    if len(body) <= limit:
        return body
    lines = body.split("\n")
    room = limit - 80  # for the closing line
    kept: list[str] = []
    for line in lines:
        room -= len(line) + 1
        if room < 0:
            break
        kept.append(line)
    kept = kept or [cap(lines[0], limit - 80)]
    left = len(lines) - len(kept)
    return "\n".join(kept) + f"\n… {left} more lines not shown: the dashboard lists every alert."
