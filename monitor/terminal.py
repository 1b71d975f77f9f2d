"""Data made safe to print on a terminal (issue 14 point 10).

E-mails, hints and Stripe's messages come from the app's database and from Stripe, that is, from customers.
A control character among them would be obeyed by the terminal: ESC starts a sequence that recolours the
screen, moves the cursor or sets the window title, CR rewrites the line. Each is shown escaped instead,
`\\x1b` style, so the text reads as it is stored and nothing moves the cursor.
"""

from __future__ import annotations

import re

# Unicode's line separators and the controls that reorder text (bidi, "Trojan Source"): shown as \\uXXXX.
_REORDERING = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
# C0 (tab and newline too: both move the cursor), DEL and C1 (U+009B is a one-character ESC [).
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_REORDERING}]")
# What json.dumps(ensure_ascii=False) leaves raw: it escapes C0 itself, and its own newlines are layout.
_UNSAFE_IN_JSON = re.compile(f"[\x7f-\x9f{_REORDERING}]")


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """`text` with every control character shown escaped (`\\x1b`, `\\x0d`, `\\u202e`)."""
    return _UNSAFE.sub(_escaped, str(text))


def printable_json(text: str) -> str:
    """JSON text from json.dumps with the characters it leaves raw escaped as `\\u…`: the same JSON."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
