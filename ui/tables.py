"""Tables the same way on every page: st.dataframe with column_config (money in major units from minor
units, times in UTC, Stripe ids as links to Stripe's dashboard), and CSV downloads that a spreadsheet
cannot execute."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from monitor import actions
from monitor.config import load
from ui import context, data
from ui.text import money_format, to_csv

TIME_FORMAT = "YYYY-MM-DD HH:mm:ss [UTC]"
ROW_PX = 35  # st.dataframe's default row height
MAX_ROWS_IN_FULL = 20
# The id at the end of a dashboard URL is what the link shows.
_LINK_TEXT = r"https://dashboard\.stripe\.com/(?:test/)?[a-z/]+/([^/?]+)$"


def time_col(label: str, **kw) -> st.column_config.Column:
    return st.column_config.DatetimeColumn(label, format=TIME_FORMAT, timezone="UTC", **kw)


def money_col(label: str, currencies=(), **kw) -> st.column_config.Column:
    return st.column_config.NumberColumn(label, format=money_format(currencies), **kw)


def link_col(label: str, **kw) -> st.column_config.Column:
    return st.column_config.LinkColumn(label, display_text=_LINK_TEXT, **kw)


def text_col(label: str, **kw) -> st.column_config.Column:
    return st.column_config.TextColumn(label, **kw)


def kind_cols() -> dict[str, st.column_config.Column]:
    """A finding's severity, kind and status, as every list of findings shows them first."""
    return {
        "severity": text_col("Severity", width="small"),
        "kind": text_col("Kind"),
        "status": text_col("Status", width="small"),
    }


def amount_cols(frame: pd.DataFrame) -> dict[str, st.column_config.Column]:
    """An amount (`amount_major`, formatted for the currencies in `frame`) and its currency."""
    currencies = frame["currency"].dropna().unique() if len(frame) and "currency" in frame else ()
    return {"amount_major": money_col("Amount", currencies), "currency": text_col("Cur.", width="small")}


def linkify(frame: pd.DataFrame, *columns: str) -> pd.DataFrame:
    """`frame` with each Stripe id in `columns` replaced by its dashboard URL (shown as the id)."""
    out = frame.copy()
    for column in columns:
        if column in out.columns:
            out[column] = out[column].map(lambda v: data.stripe_url(v) if isinstance(v, str) and v else None)
    return out


def show(
    frame: pd.DataFrame,
    columns: dict,
    *,
    key: str | None = None,
    height: int | str = "auto",
    select=False,
    empty: str = "Nothing here.",
):
    """st.dataframe of `frame` restricted to (and ordered as) `columns`; one row can be chosen when `select`
    is True (the page reruns and reads the returned event) or a callable (called before that rerun). An empty
    frame is said in words, not shown as an empty grid."""
    if frame is None or frame.empty:
        st.caption(empty)
        return None
    order = [c for c in columns if c in frame.columns]
    if height == "auto" and len(frame) <= MAX_ROWS_IN_FULL:
        height = ROW_PX * (len(frame) + 1) + 3  # every row visible: no inner scrolling for short tables
    return st.dataframe(
        frame[order],
        hide_index=True,
        column_order=order,
        column_config={c: columns[c] for c in order},
        key=key,
        height=height,
        on_select=select if callable(select) else ("rerun" if select else "ignore"),
        selection_mode="single-row",
    )


def download(frame: pd.DataFrame | None, label: str, file_name: str, *, key: str) -> None:
    """A CSV download of `frame` (formulas neutralised); off for roles that may not export. The CSV is made
    only when the button is clicked, after monitor.actions.authorize_export has checked the role again with
    the settings of that moment and recorded the export: a disabled button has no file behind it, and a
    role removed since the page was drawn gets no file either."""
    who = context.operator()
    rows = frame if frame is not None else pd.DataFrame()
    operator, store = who.name or "", context.engine()

    def csv() -> bytes:
        # Runs on Streamlit's worker thread, outside the page's script run: fresh settings, no st.* calls.
        actions.authorize_export(store, load(), operator, file_name, len(rows))
        return to_csv(rows)

    st.download_button(
        f"{label} (CSV, {len(rows)} rows)",
        icon=":material/download:",
        data=csv,
        file_name=file_name,
        mime="text/csv",
        key=key,
        disabled=not who.may_export,
        help=None if who.may_export else who.why_not("export data", "finance, support or admin"),
        on_click="ignore",
    )
