"""The status strip: one tile per component, and the exact error of each component that is down."""

from __future__ import annotations

import streamlit as st

from ui.text import md_escape, short, utc

STATUS_COLORS = {"up": "green", "degraded": "orange", "down": "red", "unknown": "gray"}
STATUS_ICONS = {
    "up": ":green[:material/check_circle:]",
    "degraded": ":orange[:material/warning:]",
    "down": ":red[:material/cancel:]",
    "unknown": ":gray[:material/help:]",
}


def tiles(strip: list[dict]) -> None:
    """One tile per component, and the exact error of every component that is down."""
    if not strip:
        st.warning(
            "No probe has run yet: press **Run checks now** on the Overview, or start `python -m jobs`."
        )
        return
    per_row = 3
    for row in [strip[i : i + per_row] for i in range(0, len(strip), per_row)]:
        for column, c in zip(st.columns(per_row), row, strict=False):
            with column.container(border=True, height="stretch"):
                status = str(c.get("status") or "unknown")
                name, badge = st.columns([2, 1], vertical_alignment="center")
                name.markdown(
                    f"{STATUS_ICONS.get(status, STATUS_ICONS['unknown'])} **{md_escape(c.get('name'))}**"
                )
                with badge:
                    st.badge(status, color=STATUS_COLORS.get(status, "gray"))
                st.text(short(c.get("detail"), 160))
                latency = c.get("latency_ms")
                took = (
                    f" · {latency:.0f} ms" if isinstance(latency, (int, float)) and latency == latency else ""
                )
                st.caption(f"checked {md_escape(utc(c.get('checked_at')))}{took}")
    for c in strip:
        if c.get("status") == "down":
            st.error(
                f"**{md_escape(c.get('name'))} is down:** {md_escape(c.get('detail'), 600)}",
                icon=":material/error:",
            )
