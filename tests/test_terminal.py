"""Data printed on a terminal: every control character shown escaped, nothing that moves the cursor."""

import json

import pytest

from monitor.cli import printable, printable_json


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        ("alice@example.com", "alice@example.com"),
        ("évé@example.com", "évé@example.com"),
        ("red\x1b[31mred", "red\\x1b[31mred"),
        ("over\rwritten", "over\\x0dwritten"),
        ("tab\tnew\nline", "tab\\x09new\\x0aline"),
        ("bell\x07 nul\x00 del\x7f", "bell\\x07 nul\\x00 del\\x7f"),
        ("c1 csi\x9b2J", "c1 csi\\x9b2J"),
        ("abc\u202eevil", "abc\\u202eevil"),
        ("line\u2028sep", "line\\u2028sep"),
    ],
)
def test_printable_escapes_control_characters_and_keeps_the_rest(data, shown):
    assert printable(data) == shown


def test_printable_json_is_the_same_json_with_nothing_raw():
    data = {"email": "a\x1b[31m\r\x9b\x7f\u202e@example.com", "n": [1, 2]}
    text = printable_json(json.dumps(data, indent=1, ensure_ascii=False))
    assert json.loads(text) == data
    assert not any(ch in text for ch in "\x1b\r\x9b\x7f\u202e")
