"""The table every measurement adds its rows to, its figures' formats, and the page written to
BENCHMARKS.md with the machine it ran on."""

from __future__ import annotations

import contextlib
import os
import platform
import sqlite3
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from monitor.stripe_api.sync import DEFAULT_WORKERS

if TYPE_CHECKING:
    from benchmarks.context import Sizes


@dataclass
class Row:
    measure: str
    ours: str
    other: str = ""
    goal: str = ""
    met: bool | None = None


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def add(self, *args, **kwargs) -> Row:
        row = Row(*args, **kwargs)
        self.rows.append(row)
        return row

    def missed(self) -> list[Row]:
        return [r for r in self.rows if r.met is False]


def _cell(value: str) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def render_table(rows: list[Row]) -> str:
    lines = ["| measure | ours | naive / limit | ratio or goal | met? |", "|---|---:|---:|---|:---:|"]
    for r in rows:
        met = {True: "yes", False: "**no**", None: ""}[r.met]
        lines.append(f"| {_cell(r.measure)} | {_cell(r.ours)} | {_cell(r.other)} | {_cell(r.goal)} | {met} |")
    return "\n".join(lines)


def seconds(s: float) -> str:
    if s >= 100:
        return f"{s:,.0f} s"
    if s >= 10:
        return f"{s:.1f} s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 0.01:
        return f"{s:.3f} s"
    return f"{s * 1000:.1f} ms"


def count(n: float) -> str:
    return f"{n:,.0f}"


def mib(m: float) -> str:
    return f"{m:,.0f} MiB"


# --- the machine -------------------------------------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    memory = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB RAM"
                break
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count() or 0
    return {
        "cpu": cpu,
        "cores": os.cpu_count() or 0,
        "usable": usable,
        "memory": memory,
        "python": platform.python_version(),
        "sqlite": sqlite3.sqlite_version,
        "system": f"{platform.system()} {platform.release()}",
        "load": load_average(),
    }


def load_average() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# --- the page ----------------------------------------------------------------------------------------------


def render(
    report: Report, info: dict, sizes: Sizes, argv_shown: str, started: datetime, finished: datetime
) -> str:
    minutes = (finished - started).total_seconds() / 60
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m benchmarks`); run it again to refresh. Issue 8 names the goals.",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores ({info['usable']} usable), {info['memory']}, {info['system']}",
        f"- Load average at start {info['load']}, at the end {info.get('load_end', '?')} (a shared machine: "
        "figures vary from run to run)",
        f"- Python {info['python']}, SQLite {info['sqlite']}, PostgreSQL "
        f"{info.get('postgres', '—')} ({info.get('postgres_note', '')})",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} minutes",
        f"- Options: `python -m benchmarks {argv_shown}`".rstrip()
        + (" (quick: smoke-test sizes)" if sizes.quick else ""),
        "",
        render_table(report.rows),
        "",
    ]
    missed = report.missed()
    if missed:
        lines += ["Missed: " + "; ".join(r.measure for r in missed) + ".", ""]
    lines += [
        "How it is measured:",
        "",
        f"- Backfill: {sizes.objects:,} Checkout Sessions (Stripe's example object, ~3 KB of JSON each) served "
        f"by `python -m monitor emulator` in its own process with `--latency-ms {sizes.latency_ms:g}`. Naive: "
        '`client.v1.checkout.sessions.list({"limit": 100}).auto_paging_iter()` of the stripe SDK, one request '
        "at a time, in its own process, storing nothing. Ours: `monitor.stripe_api.sync.sync` with "
        f"{DEFAULT_WORKERS} workers and `RateLimiter({sizes.rate_limit:g})`, all 9 resources, every page saved "
        'to the store. Each request\'s start is timed in `StripeSource._request`; "most in any 1 s" is the '
        "largest number of starts within any one-second interval.",
        "- Reconciliation: in a child process, as `python -m monitor reconcile` reads: the store's `payments` "
        "table and the app's rows at once, column-wise (ADBC into Arrow; SQLite files of 16 MiB or more through "
        "reader processes kept between reads), then `reconcile()`. Twice: the first run in a new process (the "
        "readers still starting), then the run every scheduled job after the first makes (readers started): "
        "'read both sides', 'reconcile()' and the comparison are that second run. Peak memory is the child's "
        "VmHWM over both. The naive way reads the payments the same way, then asks the app database for each "
        "payment's rows (session, intent or subscription id) through SQLAlchemy and decides in Python.",
        "- Dashboard: the reads of `monitor.views` found in the code, each the best of 3, on the backfill's "
        "store after the incremental runs, with the findings written by `lifecycle.apply_findings`, a day of "
        "probe results and 2,000 job runs.",
        "",
        "Notes:",
        "",
        *(f"- {note}" for note in report.notes),
    ]
    return "\n".join(lines)
