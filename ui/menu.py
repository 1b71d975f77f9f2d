"""The dashboard's pages as Streamlit's own menu lists them (the main page first, then pages/ in their
files' order), the page icon served by the dashboard itself, and the one line the Overview says for a URL
that names no page (Streamlit then runs the Overview)."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

import streamlit as st

from ui.text import md_code

# (script, label, icon): the Overview first (dashboard.py links to Overview.py, whose name the menu shows),
# then pages/ in their files' order.
ENTRIES = (
    ("dashboard.py", "Overview", ":material/monitor_heart:"),
    ("pages/1_Discrepancies.py", "Discrepancies", ":material/rule:"),
    ("pages/2_Customer_lookup.py", "Customer lookup", ":material/person_search:"),
    ("pages/3_Webhooks.py", "Webhooks", ":material/webhook:"),
    ("pages/4_Infrastructure.py", "Infrastructure", ":material/dns:"),
    ("pages/5_Finance.py", "Finance", ":material/payments:"),
    ("pages/6_Audit_log.py", "Audit log", ":material/history:"),
)
# The favicon, served by this dashboard itself (Streamlit fetches a `:material/…:` page icon from
# fonts.gstatic.com, so offline the tab had none).
FAVICON = Path(__file__).resolve().parent / "assets" / "favicon.png"


def url_path(script: str) -> str:
    """The URL path Streamlit gives a page of pages/: its file name without the number prefix and `.py`
    ("pages/2_Customer_lookup.py" -> "Customer_lookup"); "" for the main page."""
    if script == ENTRIES[0][0]:
        return ""
    stem = Path(script).stem
    return stem.split("_", 1)[1] if stem[:1].isdigit() and "_" in stem else stem


def unknown_page(url: str | None, base: str = "") -> str | None:
    """The path of `url` after the dashboard's `base` path (server.baseUrlPath) when it names no page
    (Streamlit then runs the Overview), else None. `url` is the browser's URL (st.context.url)."""
    if not url:
        return None
    path = unquote(urlsplit(url).path).strip("/")
    base = base.strip("/")
    if base and (path == base or path.startswith(base + "/")):
        path = path[len(base) :].strip("/")
    known = {url_path(script).lower() for script, _, _ in ENTRIES}
    return None if path.lower() in known else path


def say_if_unknown_page() -> None:
    """On the Overview: one line when the URL named a page that does not exist."""
    try:
        url = st.context.url
    except Exception:  # noqa: BLE001 - no browser URL (AppTest, bare mode): nothing to say
        return
    asked = unknown_page(url, str(st.get_option("server.baseUrlPath") or ""))
    if asked:
        st.warning(
            f"There is no page {md_code('/' + asked, 80)}: this is the Overview. The menu lists every page.",
            icon=":material/link_off:",
        )
