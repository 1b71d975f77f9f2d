"""Overview: is the payment path healthy, who is affected, and why. The dashboard's entry point
(`streamlit run dashboard.py`); the other screens are in pages/, found by Streamlit on its own.

dashboard.py is a symbolic link to this file: Streamlit names the first entry of its menu after the file
the entry point resolves to, so the menu says "Overview" while `streamlit run dashboard.py` stays the
command (st.navigation, the other way to name it, cannot be used beside a pages/ folder)."""

from __future__ import annotations

import altair as alt
import pandas as pd
import streamlit as st

from monitor import actions
from monitor.errors import MonitorError
from monitor.rules.findings import AT_RISK_KINDS, KINDS, PARITY_DEFINITION
from ui import charts as utc_charts
from ui import context, data, incidents, status
from ui.text import age, md_code, md_escape, money, short, utc

SEVERITY_COLORS = alt.Scale(domain=["critical", "warning"], range=["#d62728", "#ff9f1c"])
LOOKUP_PAGE = "pages/2_Customer_lookup.py"
DISCREPANCIES_PAGE = "pages/1_Discrepancies.py"

who = context.page(
    "Overview",
    ":material/monitor_heart:",
    "Is the path from a Stripe payment to the app's subscription row healthy right now, and who is affected?",
)
db = context.key()


@st.fragment(run_every="30s")
def status_line() -> None:
    """The first thing on the page: the verdict `monitor check` gives, and what makes it so, worst first."""
    incidents.show_status_line(data.status_strip(db), data.findings_summary(db))


@st.fragment(run_every="30s")
def live_status() -> None:
    """What is wrong right now, refreshed every 30 s without rerunning the page."""
    fresh = data.freshness(db)
    if fresh.stale:
        st.error(
            f"**The monitor's data is stale.** {md_escape(fresh.message, None)}",
            icon=":material/schedule:",
        )
    st.subheader("Status of every component")
    status.tiles(data.status_strip(db))


@st.fragment(run_every="30s")
def live_numbers() -> None:
    fresh = data.freshness(db)
    summary = data.findings_summary(db)
    st.subheader("Open findings")
    risk = summary.amount_at_risk
    sev = summary.by_severity
    cols = st.columns(3 + max(len(risk), 1))
    cols[0].metric("Open findings", summary.open, help="acknowledged ones are not counted")
    cols[1].metric("Critical", sev.get("critical", 0))
    cols[2].metric("Warning", sev.get("warning", 0))
    if risk:
        for column, (currency, amount) in zip(cols[3:], sorted(risk.items()), strict=False):
            column.metric(
                f"At risk ({md_escape(str(currency).upper(), 12)})",
                money(amount, currency),
                help="paid, and no active subscription: paid_without_subscription + subscription_not_active",
            )
    else:
        cols[3].metric("At risk", "none")
    st.caption(
        f"Last sync {age(fresh.last_sync_age_s)} · last reconcile {age(fresh.last_reconcile_age_s)}"
        f" · last scheduled job {age(fresh.last_scheduled_run_age_s)} · {summary.acknowledged}"
        " acknowledged"
    )


def affected_customers() -> None:
    """Customers who paid and have no access: the reason this tool exists, first."""
    frame, total = data.find_findings(db, tuple(AT_RISK_KINDS), None, ("open",), None, None, None, 50, 0)
    st.subheader(f"Customers who paid and have no active subscription ({total})")
    if frame.empty:
        st.success("Every paid payment has an active subscription row.")
        return
    # The newest payments first: the customer who just paid and got nothing is the one writing in now.
    newest = frame.sort_values("occurred_at", ascending=False, na_position="last").head(5)
    for f in newest.to_dict("records"):
        with st.container(border=True):
            left, right = st.columns([5, 1], vertical_alignment="center")
            with left:
                st.markdown(
                    f":red[:material/error:] **{md_escape(money(f.get('amount'), f.get('currency')))}** paid by "
                    f"{md_code(f.get('customer_email') or 'an unknown customer')}: "
                    f"{md_escape(KINDS.get(f['kind'], ('', f['kind']))[1])}"
                )
                st.caption(
                    f"{md_escape(f['kind'])} · {md_escape(f.get('severity'))} · {md_code(f.get('payment_id'))}"
                    f" · paid {md_escape(utc(f.get('occurred_at')))}"
                )
                st.text(short(f.get("hint"), 600))
            with right:
                if f.get("customer_email"):
                    st.page_link(
                        LOOKUP_PAGE,
                        label="Open customer",
                        icon=":material/person_search:",
                        query_params={"q": f["customer_email"][:320]},
                    )
                st.page_link(
                    DISCREPANCIES_PAGE,
                    label="Details",
                    icon=":material/manage_search:",
                    query_params={"finding": f["id"]},
                )
    if total > len(newest):
        st.page_link(
            DISCREPANCIES_PAGE, label=f"All {total} in Discrepancies", icon=":material/arrow_forward:"
        )


def charts() -> None:
    summary = data.findings_summary(db)
    left, right = st.columns(2)
    with left:
        st.subheader("Open findings by kind")
        by_kind = pd.DataFrame(
            [(k, n, KINDS.get(k, ("warning",))[0]) for k, n in summary.by_kind.items()],
            columns=["kind", "open", "severity"],
        )
        if by_kind.empty:
            st.caption("No open findings.")
        else:
            chart = (
                alt.Chart(by_kind)
                .mark_bar()
                .encode(
                    x=alt.X("open:Q", title="open findings", axis=alt.Axis(tickMinStep=1, format="d")),
                    y=alt.Y("kind:N", sort="-x", title=None, axis=alt.Axis(labelLimit=240)),
                    color=alt.Color("severity:N", scale=SEVERITY_COLORS),
                    tooltip=["kind", "severity", "open"],
                )
            )
            st.altair_chart(chart, width="stretch")
    with right:
        st.subheader("Payment–subscription parity", help=PARITY_DEFINITION)
        history = data.parity_history(db, 30)
        if history.empty:
            st.caption("No reconcile has run yet.")
        else:
            low = float(history["parity_pct"].min())
            history = utc_charts.with_utc_text(history, "finished_at", "at")
            chart = (
                alt.Chart(history)
                .mark_line(point=True)
                .encode(
                    x=utc_charts.utc_axis("finished_at", "reconciled at (UTC)"),
                    y=alt.Y(
                        "parity_pct:Q",
                        title="payments matched (%)",
                        scale=alt.Scale(domain=[max(0.0, min(low - 1, 99.0)), 100]),
                    ),
                    tooltip=[
                        alt.Tooltip("at:N", title="at (UTC)"),
                        "payments",
                        "matched",
                        "parity_pct",
                    ],
                )
            )
            st.altair_chart(chart, width="stretch")
            last = history.iloc[-1]
            st.caption(
                f"Latest: {last['matched']} of {last['payments']} payments matched ({last['parity_pct']}%)."
            )


def run_checks(who: context.Operator) -> None:
    """The button for support and admin only (a full sync spends Stripe's rate limit); for anyone else it is
    off and says why. monitor.actions.run_checks_now checks the role again and records every call."""
    st.subheader("Run checks now")
    st.caption("Sync from Stripe, reconcile with the app's database and probe every component, once.")
    why_not = None if who.may_run_checks else who.why_not("run the checks now")
    if why_not:
        st.caption(md_escape(why_not, None))
    if not st.button(
        "Run checks now", icon=":material/refresh:", key="run-checks", disabled=bool(why_not), help=why_not
    ):
        return
    cfg = context.config()
    with st.status("Running checks…", expanded=True) as box:
        bar = st.progress(0.0)

        def progress(step: str, fraction: float) -> None:
            bar.progress(min(max(fraction, 0.0), 1.0), text=md_escape(step))

        try:
            summary = actions.run_checks_now(cfg, progress, operator=who.name)
        except MonitorError as e:
            box.update(label="Checks failed", state="error")
            st.error(md_escape(cfg.mask(str(e)), None))
            return
        box.update(label="Checks done", state="complete", expanded=False)
    data.refresh()
    st.session_state["overview:checked"] = summary
    st.rerun()


status_line()
incidents.overview(db)
live_status()
affected_customers()
live_numbers()
charts()
done = st.session_state.pop("overview:checked", None)
if done is not None:
    said = (
        f"Checks done: verdict {done.get('status', '?')}, {done.get('payments', '?')} payments, parity "
        f"{done.get('parity_pct', '?')} %, {done.get('open_findings', '?')} open findings."
    )
    if done.get("ok"):
        st.success(md_escape(said, None))
    else:
        st.warning(md_escape(said + " Failed: " + "; ".join(done.get("errors") or []), 2000))
run_checks(who)
