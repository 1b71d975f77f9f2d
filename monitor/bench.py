"""The benchmark of issue 8: `make bench`, or `python -m monitor.bench [options]`.

One run, one table, our way side by side with the naive way:

1. Backfill: `monitor.stripe_api.sync.sync` against a naive sequential `auto_paging_iter` loop of the real stripe SDK
   over the same N Checkout Sessions, served by the emulator in a subprocess (so it does not share our GIL)
   with injected latency. Every request of ours is timed where it starts (`StripeSource._request`), so the
   table shows the most requests that started in any one second against STRIPE_RATE_LIMIT.
2. Rate-bound: the same sync against an emulator with no latency and our limiter at 20 requests/s.
3. Incremental: the requests of a sync with nothing new, and with 1,000 new sessions.
4. Reconciliation: read both sides in bulk and reconcile 100,000 payments (a SQLite store and app
   database), and 1,000,000 payments against 1,000,000 rows built in memory, each in a child process whose
   peak memory is read from the kernel; against a naive reconciliation with one app-database query per
   payment.
5. The dashboard's reads (monitor.views) with 100,000 findings in the store, best of 3.
6. Backfill and dashboard again with the store on PostgreSQL.

The table goes to stdout and to BENCHMARKS.md (--out) with the machine it ran on; progress goes to stderr.
Every process it starts (emulators, children, PostgreSQL) is stopped when it ends, also on Ctrl-C,
SIGTERM or an error. A developer tool: for PostgreSQL it uses tests.services from the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import selectors
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
from sqlalchemy import Engine, create_engine, func, insert, select, text, update
from sqlalchemy.engine import make_url

from monitor import pipeline, store
from monitor.app_db import AppDatabase, create_default_schema, load_mapping
from monitor.emulator.shapes import example
from monitor.rules.findings import PAYMENT_KINDS, Finding, finding_id
from monitor.rules.reconcile import PAYMENT_COLUMNS, SUBSCRIPTION_COLUMNS, reconcile
from monitor.store import lifecycle, snapshot
from monitor.store.db import warm_bulk_reader
from monitor.store.models import CheckoutSession, FindingRow, JobRun
from monitor.stripe_api.ratelimit import RateLimiter
from monitor.stripe_api.source import RESOURCES, StripeSource
from monitor.stripe_api.sync import DEFAULT_WORKERS, SyncResult, sync

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "BENCHMARKS.md"
KEY = "sk_test_bench"
GRACE = timedelta(minutes=10)  # GRACE_MINUTES' default
STRIPE_LIVE_LIMIT = 100  # what Stripe allows a live key (the main emulator enforces it)
STRIPE_TEST_LIMIT = 25  # what Stripe allows a test key (the rate-bound emulator enforces it)
RATE_BOUND_LIMIT = 20.0  # STRIPE_RATE_LIMIT's default for test keys
PRICES = np.array([4900, 9900, 14900, 29900], dtype=np.int64)
DAY = 86400
# Requests a sync makes when nothing happened: one per listed resource (the 8 object lists and webhook
# endpoints) plus one for events.
QUIET_REQUESTS = len(RESOURCES) + 1
VIEW_GOAL_S = 1.5
RECONCILE_GOAL_S = 10.0
MEMORY_GOAL_MIB = 2048.0
BACKFILL_GOAL = 8.0
RATE_GOAL = 0.90
RECONCILE_RATIO_GOAL = 50.0

NAIVE_LOOP = r"""
import sys, time
import stripe

base, key, every = sys.argv[1], sys.argv[2], int(sys.argv[3])
client = stripe.StripeClient(key, base_addresses={"api": base}, max_network_retries=2)
started = time.monotonic()
count = 0
for _ in client.v1.checkout.sessions.list({"limit": 100}).auto_paging_iter():
    count += 1
    if every and count % every == 0:
        print(f"[bench]   naive loop: {count:,} sessions in {time.monotonic() - started:.0f} s",
              file=sys.stderr, flush=True)
print(count, time.monotonic() - started)
"""


class BenchError(RuntimeError):
    """A step of the benchmark could not run; the message says which and why."""


_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - _STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


# --- options -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    objects: int  # backfill (ours and the naive loop)
    latency_ms: float
    rate_limit: float  # STRIPE_RATE_LIMIT for our backfill
    rows: int  # the large reconciliation, through a store and an app database
    recon_rows: int  # reconciliation through a store and app database, and the naive per-row one
    findings: int  # in the store for the dashboard reads
    new_objects: int  # the incremental run's new sessions
    rate_bound_objects: int
    mapping_sample: int  # payments the naive-through-AppDatabase variant runs, then extrapolated
    postgres: str  # auto | off | a URL
    quick: bool


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m monitor.bench",
        description="Benchmark the sync, reconciliation and dashboard reads against the naive way; "
        "print one table and write it to BENCHMARKS.md.",
    )
    p.add_argument("--objects", type=int, help="Checkout Sessions to backfill (default 100,000)")
    p.add_argument("--latency-ms", type=float, help="emulator latency per request (default 150)")
    p.add_argument("--rate-limit", type=float, help="our STRIPE_RATE_LIMIT for the backfill (default 80)")
    p.add_argument(
        "--rows", type=int, help="payments and app rows of the large reconciliation (default 1,000,000)"
    )
    p.add_argument(
        "--postgres",
        default=None,
        help="auto: start a server with tests.services (default); off: skip; or a server URL whose user "
        "may create databases",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the table (BENCHMARKS.md)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, no PostgreSQL: a smoke test")
    # A child process of the benchmark: one reconciliation, its figures as JSON on stdout.
    p.add_argument("--child", choices=("reconcile-store",), help=argparse.SUPPRESS)
    p.add_argument("--store", help=argparse.SUPPRESS)
    p.add_argument("--app", help=argparse.SUPPRESS)
    p.add_argument("--now", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    for name in ("objects", "rows"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name} must be at least 1")
    if args.latency_ms is not None and args.latency_ms < 0:
        p.error("--latency-ms must be >= 0")
    if args.rate_limit is not None and args.rate_limit <= 0:
        p.error("--rate-limit must be > 0")
    return args


def sizes_from(args: argparse.Namespace) -> Sizes:
    quick = args.quick

    def pick(value, normal, small):
        return value if value is not None else (small if quick else normal)

    objects = pick(args.objects, 100_000, 2_000)
    return Sizes(
        objects=objects,
        latency_ms=pick(args.latency_ms, 150.0, 20.0),
        rate_limit=pick(args.rate_limit, 80.0, 80.0),
        rows=pick(args.rows, 1_000_000, 20_000),
        recon_rows=2_000 if quick else 100_000,
        findings=2_000 if quick else 100_000,
        new_objects=200 if quick else 1_000,
        rate_bound_objects=min(objects, 600 if quick else 30_000),
        mapping_sample=200 if quick else 2_000,
        postgres=pick(args.postgres, "auto", "off"),
        quick=quick,
    )


# --- the table ---------------------------------------------------------------------------------------------


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
        "load": _load(),
    }


def _load() -> str:
    try:
        return ", ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "unknown"


# --- processes ---------------------------------------------------------------------------------------------


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Emulator:
    """`python -m monitor emulator` in a subprocess (its own GIL), with its admin endpoints."""

    def __init__(self, name: str, fixtures: Path, workdir: Path, *, latency_ms: float, rate_limit):
        self.name, self.fixtures, self.workdir = name, fixtures, workdir
        self.latency_ms, self.rate_limit = latency_ms, rate_limit
        self.proc: subprocess.Popen | None = None
        self._launch()

    def _launch(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.workdir / f"emulator-{self.name}.log"
        command = [
            sys.executable,
            "-m",
            "monitor",
            "emulator",
            "--fixtures",
            str(self.fixtures),
            "--port",
            str(self.port),
            "--api-key",
            KEY,
            "--latency-ms",
            f"{self.latency_ms:g}",
        ]
        if self.rate_limit:
            command += ["--rate-limit", f"{self.rate_limit:g}"]
        with open(self.log_path, "wb") as errors:
            self.proc = subprocess.Popen(
                command,
                cwd=ROOT,
                env=child_env(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=errors,
            )

    def wait_ready(self, timeout: float = 900) -> None:
        """Wait for its "listening" line (loading 100,000 objects takes a while); relaunch on a port clash."""
        for _attempt in range(3):
            if self._wait_line(timeout):
                return
            error = self._log_tail()
            if "cannot listen on port" not in error:
                raise BenchError(f"the {self.name} emulator exited before listening: {error}")
            self._launch()
        raise BenchError(f"the {self.name} emulator found no free port: {self._log_tail()}")

    def _wait_line(self, timeout: float) -> bool:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        seen = b""
        with selectors.DefaultSelector() as selector:
            selector.register(self.proc.stdout, selectors.EVENT_READ)
            while b"listening on" not in seen:
                if time.monotonic() > deadline:
                    raise BenchError(f"the {self.name} emulator did not listen within {timeout:.0f} s")
                if selector.select(1.0):
                    chunk = os.read(self.proc.stdout.fileno(), 4096)
                    if not chunk:  # stdout closed: it has exited, or is exiting
                        self.proc.wait(timeout=30)
                        return False
                    seen += chunk
                elif self.proc.poll() is not None:
                    return False
        return True

    def _log_tail(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            lines = []
        return " / ".join(lines[-3:]) or f"exit status {self.proc.poll() if self.proc else None}"

    def _admin(self, method: str, path: str, payload: dict | None = None) -> dict:
        request = urllib.request.Request(
            self.base_url + path,
            data=orjson.dumps(payload if payload is not None else {}) if method == "POST" else None,
            method=method,
            headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=300) as answer:
            return json.loads(answer.read())

    def stats(self) -> dict:
        return self._admin("GET", "/_emulator/stats")

    def reset_stats(self) -> None:
        self._admin("POST", "/_emulator/stats/reset")

    def add(self, objects: list[dict]) -> None:
        self._admin("POST", "/_emulator/objects", {"objects": objects})

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()  # the emulator stops cleanly on SIGTERM
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=15)
        if proc.stdout is not None:
            proc.stdout.close()


def run_child(arguments: list[str], what: str, timeout: float = 1800) -> dict:
    """Run `python -m monitor.bench --child …` and return the JSON it prints last."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", "monitor.bench", "--child", *arguments],
            cwd=ROOT,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what} took longer than {timeout:.0f} s") from None
    if done.returncode != 0:
        tail = " / ".join(done.stderr.strip().splitlines()[-4:])
        raise BenchError(f"{what} failed (exit status {done.returncode}): {tail}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def _peak_mib() -> float:
    """This process's peak resident memory (VmHWM), MiB."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _rss_mib() -> float:
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


# --- Stripe-shaped data ------------------------------------------------------------------------------------


def _session_base() -> dict:
    return example(
        "checkout.session",
        status="complete",
        payment_status="paid",
        mode="payment",
        currency="usd",
        customer=None,
        payment_intent=None,
        subscription=None,
        invoice=None,
        livemode=False,
    )


def bench_sessions(
    n: int, newest: int, *, prefix: str = "cs_bench", email: str = "c", spacing: float = 60
) -> Iterator[dict]:
    """`n` paid Checkout Sessions `spacing` seconds apart, the newest created at `newest`."""
    base = _session_base()
    details = base.get("customer_details") or {}
    for i in range(n):
        address = f"{email}{i}@example.com"
        price = int(PRICES[i % 4])
        obj = dict(base)
        obj.update(
            id=f"{prefix}{i:08d}",
            created=newest - int(i * spacing),
            amount_total=price,
            amount_subtotal=price,
            customer_email=address,
            customer_details={**details, "email": address},
        )
        yield obj


def write_fixtures(path: Path, objects: Iterable[dict]) -> int:
    n = 0
    with open(path, "wb") as f:
        f.write(b'{"objects":[')
        for obj in objects:
            f.write((b"," if n else b"") + orjson.dumps(obj))
            n += 1
        f.write(b"]}")
    return n


def _ids(prefix: str, numbers: np.ndarray) -> pd.Series:
    return prefix + pd.Series(numbers).astype("str").str.zfill(8)


def _utc_seconds(values: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(values, unit="s", utc=True)).astype("datetime64[us, UTC]")


def synthetic_frames(n: int, now: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """`n` payments and `n` subscription rows, the way a subscription business has them, about 1 % of
    them anomalies.

    Payment k: four in five are Checkout Sessions (k % 5 == 0 starts a subscription, the rest are one-off
    purchases), one in five a renewal invoice of the subscription started 4 payments earlier. Rows: one
    per session, except ~0.4 % missing (paid_without_subscription); ~0.2 % not active
    (subscription_not_active), ~0.2 % with another amount (amount_mismatch), ~0.1 % doubled
    (duplicate_subscription); ~0.25 % of payments fully refunded and ~0.05 % disputes lost
    (refunded_but_active); 0.1 % active rows without any payment (active_without_payment); the rest up to
    `n` are old canceled rows."""
    k = np.arange(n, dtype=np.int64)
    invoice = k % 5 == 4
    owner = np.where(invoice, k - 4, k)  # whose customer and subscription the payment belongs to
    subscribed = owner % 5 == 0
    step = max(1, (400 * DAY) // max(n, 1))
    created = (now - 7200) - (n - 1 - k) * step
    amount = PRICES[owner % 4]
    refunded = np.where(k % 400 == 13, amount, 0)
    cs = _ids("cs_", k)
    sub = _ids("sub_", owner)
    payments = pd.DataFrame(
        {
            "payment_id": cs.where(~invoice, _ids("in_", k)),
            "source": pd.Series(np.where(invoice, "invoice", "checkout_session")).astype("str"),
            "checkout_session_id": cs.where(~invoice),
            "payment_intent_id": _ids("pi_", k),
            "invoice_id": _ids("in_", k).where(invoice),
            "stripe_subscription_id": sub.where(subscribed),
            "stripe_subscription_status": pd.Series(np.where(subscribed, "active", "")).astype("str"),
            "customer_id": _ids("cus_", owner),
            "customer_email": "c" + pd.Series(owner).astype("str") + "@example.com",
            "amount": amount,
            "currency": pd.Series(np.where(owner % 10 == 3, "eur", "usd")).astype("str"),
            "created": _utc_seconds(created),
            "amount_refunded": refunded,
            "dispute_status": pd.Series(np.where(k % 2000 == 17, "lost", "")).astype("str"),
            "billing_reason": pd.Series(np.where(invoice, "subscription_cycle", "")).astype("str"),
            "period_end": _utc_seconds(created + 30 * DAY).where(invoice),
            "event_id": _ids("evt_", k),
            "livemode": np.zeros(n, dtype=bool),
            "zero_reason": pd.Series([None] * n, dtype="str"),
        }
    )
    for c in ("stripe_subscription_status", "dispute_status", "billing_reason"):
        payments[c] = payments[c].mask(payments[c] == "")
    payments = payments[list(PAYMENT_COLUMNS)]

    has_row = ~invoice & (k % 250 != 1)
    r = k[has_row]
    renewal = np.minimum(r + 4, n - 1)
    period_end = np.where(r % 5 == 0, np.where(r + 4 < n, created[renewal], created[r]) + 30 * DAY, 0)
    rows = pd.DataFrame(
        {
            "email": "c" + pd.Series(r).astype("str") + "@example.com",
            "customer_id": _ids("cus_", r),
            "checkout_session_id": _ids("cs_", r),
            "payment_intent_id": _ids("pi_", r),
            "stripe_subscription_id": _ids("sub_", r).where(r % 5 == 0),
            "amount": PRICES[r % 4] + np.where(r % 500 == 7, 100, 0),
            "currency": pd.Series(np.where(r % 10 == 3, "eur", "usd")).astype("str"),
            "status": pd.Series(np.where(r % 500 == 3, "incomplete", "active")).astype("str"),
            "created_at": _utc_seconds(created[r] + 5),
            "activated_at": _utc_seconds(created[r] + 5),
            "current_period_end": _utc_seconds(period_end).where(r % 5 == 0),
        }
    )
    doubled = rows[(r % 1000) == 11]
    orphans = max(1, n // 1000)
    j = np.arange(orphans, dtype=np.int64)
    orphan_rows = _unlinked_rows(
        "orphan", j, 9900, "active", np.full(orphans, now - 30 * DAY), np.full(orphans, now + 30 * DAY)
    )
    filler = max(0, n - len(rows) - len(doubled) - orphans)
    j = np.arange(filler, dtype=np.int64)
    old_rows = _unlinked_rows("old", j, 4900, "canceled", now - 800 * DAY + j, now - 700 * DAY + j)
    subscriptions = pd.concat([rows, doubled, orphan_rows, old_rows], ignore_index=True)
    subscriptions["amount"] = subscriptions["amount"].astype("Int64")
    subscriptions.insert(0, "id", pd.Series(np.arange(1, len(subscriptions) + 1), dtype="object"))
    return payments, subscriptions[list(SUBSCRIPTION_COLUMNS)]


def _unlinked_rows(
    prefix: str, j: np.ndarray, amount: int, status: str, created: np.ndarray, period_end: np.ndarray
) -> pd.DataFrame:
    """App rows linked to no payment (only a customer and a Stripe subscription of their own)."""
    n = len(j)
    return pd.DataFrame(
        {
            "email": prefix + pd.Series(j).astype("str") + "@example.com",
            "customer_id": _ids(f"cus_{prefix}", j),
            "checkout_session_id": pd.Series([None] * n, dtype="str"),
            "payment_intent_id": pd.Series([None] * n, dtype="str"),
            "stripe_subscription_id": _ids(f"sub_{prefix}", j),
            "amount": np.full(n, amount),
            "currency": pd.Series(["usd"] * n, dtype="str"),
            "status": pd.Series([status] * n, dtype="str"),
            "created_at": _utc_seconds(created),
            "activated_at": _utc_seconds(created),
            "current_period_end": _utc_seconds(period_end),
        }
    )


def _text(value) -> str | None:
    return value if isinstance(value, str) and value else None


def _epoch(value) -> int | None:
    return None if value is None or pd.isna(value) else int(pd.Timestamp(value).timestamp())


def stripe_objects(payments: pd.DataFrame, now: int) -> Iterator[dict]:
    """The Stripe objects behind `payments` (synthetic_frames'): sessions, invoices, subscriptions,
    refunds, disputes, then the events that announced each payment, shaped like Stripe's own examples."""
    session_base = _session_base()
    details = session_base.get("customer_details") or {}
    invoice_base = example("invoice", status="paid", livemode=False, subscription=None)
    subscription_base = example("subscription", status="active", livemode=False)
    refund_base = example("refund", status="succeeded", charge=None)
    dispute_base = example("dispute", status="lost", charge=None, livemode=False)
    event_base = example("event", pending_webhooks=0, livemode=False)
    records = payments.to_dict("records")
    for p in records:
        created = _epoch(p["created"])
        pid, email, sub = p["payment_id"], _text(p["customer_email"]), _text(p["stripe_subscription_id"])
        if p["source"] == "checkout_session":
            obj = dict(session_base)
            obj.update(
                id=pid,
                created=created,
                mode="subscription" if sub else "payment",
                amount_total=int(p["amount"]),
                amount_subtotal=int(p["amount"]),
                currency=p["currency"],
                customer=p["customer_id"],
                customer_email=email,
                customer_details={**details, "email": email},
                payment_intent=p["payment_intent_id"],
                subscription=sub,
            )
            yield obj
            if sub:
                item = {"object": "subscription_item", "current_period_end": created + 30 * DAY}
                yield {
                    **subscription_base,
                    "id": sub,
                    "created": created,
                    "customer": p["customer_id"],
                    "items": {
                        "object": "list",
                        "data": [item],
                        "has_more": False,
                        "url": "/v1/subscription_items",
                    },
                }
        else:
            obj = dict(invoice_base)
            obj.update(
                id=pid,
                created=created,
                customer=p["customer_id"],
                customer_email=email,
                amount_paid=int(p["amount"]),
                currency=p["currency"],
                billing_reason=p["billing_reason"],
                parent={
                    "type": "subscription_details",
                    "quote_details": None,
                    "subscription_details": {"metadata": {}, "subscription": sub},
                },
                payments={
                    "object": "list",
                    "data": [
                        {"payment": {"type": "payment_intent", "payment_intent": p["payment_intent_id"]}}
                    ],
                    "has_more": False,
                },
                lines={
                    "object": "list",
                    "data": [
                        {"object": "line_item", "period": {"start": created, "end": _epoch(p["period_end"])}}
                    ],
                    "has_more": False,
                },
                status_transitions={"paid_at": created},
            )
            yield obj
        if p["amount_refunded"]:
            yield {
                **refund_base,
                "id": "re_" + pid,
                "created": created + 3600,
                "amount": int(p["amount_refunded"]),
                "payment_intent": p["payment_intent_id"],
            }
        if _text(p["dispute_status"]):
            yield {
                **dispute_base,
                "id": "dp_" + pid,
                "created": created + 7200,
                "payment_intent": p["payment_intent_id"],
                "status": p["dispute_status"],
            }
    for p in records:  # last: an event's snapshot of its payment is older than the payment's own copy
        kind = "checkout.session" if p["source"] == "checkout_session" else "invoice"
        yield {
            **event_base,
            "id": p["event_id"],
            "created": _epoch(p["created"]),
            "type": "checkout.session.completed" if kind == "checkout.session" else "invoice.paid",
            "data": {"object": {"id": p["payment_id"], "object": kind}},
        }


def app_rows(subscriptions: pd.DataFrame) -> list[dict]:
    """synthetic_frames' rows as rows of the default app schema (times as the app writes them)."""
    out = pd.DataFrame(
        {
            "id": subscriptions["id"].astype("int64"),
            "customer_email": subscriptions["email"],
            "stripe_customer_id": subscriptions["customer_id"],
            "stripe_checkout_session_id": subscriptions["checkout_session_id"],
            "stripe_payment_intent_id": subscriptions["payment_intent_id"],
            "stripe_subscription_id": subscriptions["stripe_subscription_id"],
            "amount": subscriptions["amount"],
            "currency": subscriptions["currency"],
            "status": subscriptions["status"],
            **{
                c: subscriptions[c].dt.strftime("%Y-%m-%d %H:%M:%S")
                for c in ("created_at", "activated_at", "current_period_end")
            },
        }
    )
    out = out.astype(object).where(out.notna(), None)
    return out.to_dict("records")


def _chunks(items: Iterable, size: int) -> Iterator[list]:
    chunk: list = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


# --- 1-3: sync ---------------------------------------------------------------------------------------------


@dataclass
class SyncRun:
    result: SyncResult
    starts: list[float]

    @property
    def max_per_second(self) -> int:
        return max_in_window(self.starts, 1.0)


def max_in_window(starts: list[float], window: float) -> int:
    """The most request starts in any `window` seconds (any half-open interval of that length)."""
    times = sorted(starts)
    best, first = 0, 0
    for last, t in enumerate(times):
        while times[first] <= t - window:
            first += 1
        best = max(best, last - first + 1)
    return best


def our_sync(engine: Engine, base_url: str, rate: float, *, now: int, label: str) -> SyncRun:
    """`monitor.stripe_api.sync.sync` through a StripeSource limited to `rate` requests/s, each request's start timed."""
    source = StripeSource(KEY, base_url, limiter=RateLimiter(rate))
    starts: list[float] = []
    request = source._request

    def timed(path: str, params: dict) -> dict:
        starts.append(time.monotonic())  # list.append is atomic: safe from the sync's threads
        return request(path, params)

    source._request = timed  # type: ignore[method-assign]
    shown = [time.monotonic()]

    def progress(resource: str, objects: int, pages: int) -> None:
        if time.monotonic() - shown[0] >= 5:
            shown[0] = time.monotonic()
            log(f"  {label}: {resource} {objects:,} objects, {pages:,} pages")

    try:
        result = sync(engine, source, now=now, progress=progress, workers=DEFAULT_WORKERS)
    finally:
        source.close()
    return SyncRun(result, starts)


def stored_sessions(engine: Engine) -> int:
    with engine.connect() as conn:
        return conn.execute(select(func.count()).select_from(CheckoutSession)).scalar_one()


def naive_loop(emulator: Emulator, progress_every: int) -> tuple[int, float, int]:
    """(sessions seen, seconds, requests) of the SDK's sequential auto-paging loop, in its own process."""
    emulator.reset_stats()
    done = subprocess.run(
        [sys.executable, "-c", NAIVE_LOOP, emulator.base_url, KEY, str(progress_every)],
        cwd=ROOT,
        env=child_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
        timeout=6 * 3600,
    )
    if done.returncode != 0:
        raise BenchError(f"the naive loop failed (exit status {done.returncode}); see its error above")
    seen, took = done.stdout.split()[-2:]
    return int(seen), float(took), emulator.stats()["requests"]


# --- 4: reconciliation -------------------------------------------------------------------------------------


def build_recon_store(store_url: str, n: int, now: int) -> tuple[int, list[dict]]:
    """A store holding `n` synthetic payments, saved as the sync saves them; (objects saved, their app
    rows in the default schema)."""
    payments, subscriptions = synthetic_frames(n, now)
    engine = store.open_store(store_url)
    saved = 0
    try:
        for chunk in _chunks(stripe_objects(payments, now), 5000):
            with engine.begin() as conn:
                saved += store.save_objects(conn, chunk, snapshot_at=now)
    finally:
        engine.dispose()
    return saved, app_rows(subscriptions)


def build_app_db(url: str, rows: list[dict]) -> None:
    """An app database of the default schema holding `rows`, with the indexes any app has on the ids
    it looks rows up by (the naive loop uses them; the bulk read does not)."""
    create_default_schema(url, rows)
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for column in (
                "stripe_checkout_session_id",
                "stripe_payment_intent_id",
                "stripe_subscription_id",
            ):
                conn.execute(text(f"CREATE INDEX bench_{column} ON subscriptions ({column})"))
            if conn.dialect.name == "postgresql":
                conn.execute(text("ANALYZE subscriptions"))
    finally:
        engine.dispose()


def child_reconcile(args: argparse.Namespace) -> dict:
    """In a child process: a reconciliation as `python -m monitor reconcile` does it (both sides read at
    once, then reconcile()), twice: first as a new process meets it (the SQLite reader processes still
    starting), then as the jobs process does every run after its first (readers started). Its times and
    this process's peak memory."""
    now = datetime.fromtimestamp(args.now, UTC)
    gc.collect()
    out: dict = {"baseline_mib": _rss_mib()}
    engine = store.open_store(args.store)
    app = AppDatabase(args.app, load_mapping("default"))
    try:
        warm_bulk_reader(engine.url)  # as pipeline.run_reconcile does when it starts
        warm_bulk_reader(args.app)
        for run in ("first_", ""):
            t0 = time.perf_counter()
            payments, subscriptions = pipeline.read_both_sides(engine, app)
            t1 = time.perf_counter()
            out[f"{run}read_peak_mib"] = _peak_mib()
            result = reconcile(
                payments, subscriptions, now=now, grace=GRACE, active_statuses=app.mapping.active_statuses
            )
            t2 = time.perf_counter()
            out.update({f"{run}read_s": t1 - t0, f"{run}reconcile_s": t2 - t1})
            counts = (len(payments), len(subscriptions))
            if run:
                del payments, subscriptions, result
                gc.collect()
    finally:
        engine.dispose()
        app.dispose()
    out.update(
        payments=counts[0],
        rows=counts[1],
        findings=len(result.findings),
        by_kind=_by_kind(f.kind for f in result.findings),
        peak_mib=_peak_mib(),
    )
    return out


def _by_kind(kinds: Iterable[str]) -> dict[str, int]:
    counted: dict[str, int] = {}
    for kind in kinds:
        counted[kind] = counted.get(kind, 0) + 1
    return dict(sorted(counted.items()))


_ACTIVE = frozenset({"active", "trialing"})
_ENDED = frozenset({"canceled", "incomplete_expired"})


def _missing(value) -> bool:
    return value is None or (not isinstance(value, list | dict) and bool(pd.isna(value)))


def _when(value) -> datetime | None:
    if _missing(value):
        return None
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def naive_decide(p: dict, rows: list[dict], now: datetime) -> list[str]:
    """The per-payment decisions of a naive reconciliation, in plain Python, for one payment and its rows.
    (It judges less than monitor.rules.reconcile: no active_without_payment, no latest-payment rules.)"""
    created = _when(p["created"])
    due = created is not None and now - created > GRACE
    refunded, amount = int(p["amount_refunded"] or 0), int(p["amount"] or 0)
    settled = (refunded > 0 and refunded >= amount) or p["dispute_status"] == "lost"
    if not rows:
        return ["paid_without_subscription"] if due and not settled else []
    kinds = []
    active = [r for r in rows if not _missing(r["status"]) and str(r["status"]).lower() in _ACTIVE]
    if not active and due and not settled and p["stripe_subscription_status"] not in _ENDED:
        kinds.append("subscription_not_active")
    for r in active:
        currency = "" if _missing(r["currency"]) else str(r["currency"]).lower()
        if (not _missing(r["amount"]) and int(r["amount"]) != amount) or (
            currency and currency != p["currency"]
        ):
            kinds.append("amount_mismatch")
            break
    if active and settled:
        kinds.append("refunded_but_active")
    if len(active) > 1:
        kinds.append("duplicate_subscription")
    period_end = _when(p["period_end"])
    if period_end is not None and active and due and not settled:
        ends = [_when(r["current_period_end"]) for r in active]
        if any(e is None or e < period_end - timedelta(days=1) for e in ends):
            kinds.append("period_not_extended")
    return kinds


def naive_reconcile(store_url: str, app_url: str, now: datetime, *, through_mapping: bool, limit: int | None):
    """One app-database query per payment (payments themselves read in bulk), decisions in Python.
    Returns (seconds reading payments, seconds of the per-payment loop, payments done, findings by kind).

    through_mapping: each payment's rows through AppDatabase.rows_for_payment (the project's own
    per-payment read, a DataFrame per call); else a bare SQL query returning tuples."""
    engine = store.open_store(store_url)
    app = AppDatabase(app_url, load_mapping("default"))
    try:
        t0 = time.perf_counter()
        with engine.connect() as conn:
            payments = snapshot.read_payments(conn)
        t1 = time.perf_counter()
        records = payments.to_dict("records")[:limit]
        inner = app.mapping.subscriptions_query.strip().rstrip(";")
        query = text(
            f"SELECT * FROM ({inner}) mapped WHERE mapped.checkout_session_id = :cs "
            "OR mapped.payment_intent_id = :pi OR mapped.stripe_subscription_id = :sub"
        )
        kinds: list[str] = []
        t2 = time.perf_counter()
        with app.engine.connect() as conn:
            for p in records:
                ids = {
                    "cs": _text(p["checkout_session_id"]),
                    "pi": _text(p["payment_intent_id"]),
                    "sub": _text(p["stripe_subscription_id"]),
                }
                if through_mapping:
                    rows = app.rows_for_payment(
                        conn,
                        checkout_session_id=ids["cs"],
                        payment_intent_id=ids["pi"],
                        stripe_subscription_id=ids["sub"],
                    ).to_dict("records")
                else:
                    rows = [r._asdict() for r in conn.execute(query, ids)]
                kinds += naive_decide(p, rows, now)
        t3 = time.perf_counter()
    finally:
        engine.dispose()
        app.dispose()
    return t1 - t0, t3 - t2, len(records), _by_kind(kinds)


# --- 5: dashboard ------------------------------------------------------------------------------------------

_KIND_MIX = ("paid_without_subscription",) * 4 + (
    "subscription_not_active",
    "subscription_not_active",
    "amount_mismatch",
    "period_not_extended",
    "duplicate_subscription",
    "active_without_payment",
    "refunded_but_active",
)
_COMPONENTS = ("redis:cache", "monitor_db", "app_db", "stripe_api", "webhook_endpoint", "scheduler")


def seed_dashboard(engine: Engine, n: int, now: datetime) -> tuple[dict, float]:
    """`n` findings about the store's payments, written by lifecycle.apply_findings as a reconcile run
    writes them (then a sixteenth resolved and a sixteenth acknowledged), plus a day of probe results and
    2,000 job runs. Returns (samples for the reads, seconds apply_findings took)."""
    with engine.connect() as conn:
        payments = conn.execute(
            text(
                "SELECT payment_id, customer_email, amount, currency, created FROM payments ORDER BY payment_id"
            )
        ).all()
    if not payments:
        raise BenchError("the store holds no payments to write findings about")
    findings = []
    for j in range(n):
        p = payments[j % len(payments)]
        kind = _KIND_MIX[j % len(_KIND_MIX)]
        suffix = "" if j < len(payments) else f":{j}"
        row_kind = kind in ("active_without_payment", "duplicate_subscription")
        findings.append(
            Finding(
                kind=kind,
                key=f"{kind}:{p.payment_id}{suffix}",
                payment_id=None if kind == "active_without_payment" else p.payment_id,
                customer_email=p.customer_email,
                amount=p.amount,
                currency=p.currency,
                subscription_ids=[j + 1, j + 2] if row_kind else [],
                hint=f"{p.customer_email} paid {p.amount} {p.currency}; no active subscription row matches",
                occurred_at=datetime.fromtimestamp(p.created or 0, UTC),
            )
        )
    t = FindingRow.__table__
    started = time.perf_counter()
    with engine.begin() as conn:
        lifecycle.apply_findings(conn, findings, kinds=PAYMENT_KINDS, now=now)
    took = time.perf_counter() - started
    with engine.begin() as conn:
        conn.execute(update(FindingRow).where(t.c.id.like("0%")).values(status="resolved", resolved_at=now))
        conn.execute(
            update(FindingRow)
            .where(t.c.id.like("1%"))
            .values(status="acknowledged", ack_note="known", ack_by="bench", ack_at=now)
        )
        store.save_probe_results(
            conn,
            (
                {
                    "component": c,
                    "status": "up",
                    "detail": "ok",
                    "latency_ms": 3.0,
                    "checked_at": now - timedelta(minutes=m),
                }
                for m in range(1440)
                for c in _COMPONENTS
            ),
        )
        conn.execute(
            insert(JobRun),
            [
                {
                    "job": ("sync", "reconcile", "probe", "jobs:sync")[m % 4],
                    "started_at": now - timedelta(minutes=5 * m + 1),
                    "finished_at": now - timedelta(minutes=5 * m),
                    "outcome": "ok",
                    "error": None,
                    "counts": json.dumps(
                        {"payments": len(payments), "matched": len(payments) - 1000, "parity_pct": 99.0}
                    ),
                }
                for m in range(2000)
            ],
        )
    middle = payments[len(payments) // 2]
    sample = {
        "email": middle.customer_email,
        "finding_id": finding_id(findings[len(findings) // 2].key),
        "search": middle.customer_email.split("@")[0] + "@",
    }
    return sample, took


def dashboard_app_db(url: str, engine: Engine) -> None:
    """An app database (default schema) with an active row for every session in the store."""
    with engine.connect() as conn:
        sessions = conn.execute(
            text(
                "SELECT id, customer_email, amount_total, currency, created FROM stripe_checkout_sessions ORDER BY id"
            )
        ).all()
    create_default_schema(
        url,
        [
            {
                "id": i + 1,
                "customer_email": s.customer_email or "",
                "stripe_checkout_session_id": s.id,
                "amount": s.amount_total,
                "currency": s.currency,
                "status": "active",
                "created_at": datetime.fromtimestamp(s.created, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            }
            for i, s in enumerate(sessions)
        ],
    )


def time_views(
    engine: Engine, app: AppDatabase, sample: dict, now: datetime
) -> list[tuple[str, float | str]]:
    """Each dashboard read that monitor.views has, best of 3: (label, seconds or an error)."""
    try:
        from monitor import views
    except Exception as e:  # noqa: BLE001 - another engineer is finishing it: report, do not stop
        return [("monitor.views", f"does not import: {e.__class__.__name__}: {e}")]
    year_ago = now - timedelta(days=365)
    calls: list[tuple[str, str, tuple, dict]] = [
        ("find_findings: first page", "find_findings", (), {}),
        ("find_findings: text search", "find_findings", (), {"text": sample["search"]}),
        (
            "find_findings: one kind, page 21",
            "find_findings",
            (),
            {"kinds": ["amount_mismatch"], "offset": 1000},
        ),
        ("findings_summary", "findings_summary", (), {}),
        ("status_strip", "status_strip", (), {}),
        ("finance: by month, a year", "finance", (), {"period": "month", "since": year_ago, "until": now}),
        ("audit_log", "audit_log", (), {}),
        ("customer_lookup: an e-mail", "customer_lookup", (app, sample["email"]), {"now": now}),
        ("finding_detail", "finding_detail", (app, sample["finding_id"]), {"now": now}),
    ]
    timings: list[tuple[str, float | str]] = []
    for label, name, args, kwargs in calls:
        read = getattr(views, name, None)
        if read is None:
            continue
        best: float | str = float("inf")
        for _ in range(3):
            started = time.perf_counter()
            try:
                read(engine, *args, **kwargs)
            except Exception as e:  # noqa: BLE001 - a failing read is a figure of the table, not a crash
                best = f"error: {e.__class__.__name__}: {str(e).splitlines()[0][:120] if str(e) else ''}"
                break
            best = min(best, time.perf_counter() - started)
        timings.append((label, best))
    return timings


def view_rows(report: Report, where: str, timings: list[tuple[str, float | str]], findings: int) -> None:
    for label, took in timings:
        measure = f"Dashboard ({where}, {findings:,} findings): {label}"
        if isinstance(took, str):
            report.add(measure, took, "", f"< {VIEW_GOAL_S} s", False if label != "monitor.views" else None)
        else:
            report.add(measure, seconds(took), "", f"< {VIEW_GOAL_S} s", took < VIEW_GOAL_S)


# --- PostgreSQL --------------------------------------------------------------------------------------------


def _services():
    """tests.services from this repository (the benchmark is a developer tool run from a checkout)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    import tests.services as services

    return services


def postgres_server(mode: str, stack: contextlib.ExitStack) -> tuple[str | None, str]:
    """(a server URL whose user may create databases, or None; what was done)."""
    if mode == "off":
        return None, "skipped (--postgres off)"
    if mode != "auto":
        return mode, "the server given by --postgres"
    try:
        services = _services()
    except ImportError as e:
        return None, (
            f"skipped: tests.services is not importable ({e}); run the benchmark from the repository "
            "checkout, or pass --postgres URL"
        )
    log("starting PostgreSQL (tests.services.start_postgres)")
    try:
        server = services.start_postgres()
    except Exception as e:  # noqa: BLE001 - ServiceError and friends: say why and go on without it
        return None, f"skipped: PostgreSQL did not start: {str(e).splitlines()[0] if str(e) else e!r}"
    stack.callback(server.stop)
    return server.url("postgres"), "a throw-away server from tests.services.start_postgres (fsync off)"


def postgres_database(admin_url: str, stack: contextlib.ExitStack) -> str:
    """A new, empty database on the server, dropped when the benchmark ends."""
    name = f"ppm_bench_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        admin.dispose()

    def drop() -> None:
        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        finally:
            engine.dispose()

    stack.callback(drop)
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def postgres_version(url: str) -> str:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return str(conn.execute(text("SHOW server_version")).scalar()).split()[0]
    finally:
        engine.dispose()


# --- the run -----------------------------------------------------------------------------------------------


def backfill_rows(
    report: Report,
    where: str,
    n: int,
    ours: SyncRun,
    naive: tuple[int, float, int],
    rate: float,
    latency: float,
) -> None:
    naive_seen, naive_s, naive_requests = naive
    ours_rate = ours.result.total / ours.result.seconds if ours.result.seconds else 0.0
    naive_rate = naive_seen / naive_s if naive_s else 0.0
    ratio = ours_rate / naive_rate if naive_rate else 0.0
    name = f"Backfill {n:,} sessions, {latency:g} ms latency ({where} store)"
    report.add(
        f"{name}: wall time",
        seconds(ours.result.seconds),
        seconds(naive_s),
        f"{naive_s / max(ours.result.seconds, 1e-9):.1f}× faster",
    )
    report.add(
        f"{name}: objects/s",
        count(ours_rate),
        count(naive_rate),
        f"{ratio:.1f}× (goal ≥ {BACKFILL_GOAL:g}×)",
        ratio >= BACKFILL_GOAL,
    )
    report.add(f"{name}: requests", count(ours.result.requests), count(naive_requests))
    report.add(
        f"{name}: most requests started in any 1 s",
        count(ours.max_per_second),
        f"limit {rate:g}/s",
        f"≤ {rate:g}",
        ours.max_per_second <= rate,
    )


@dataclass
class Bench:
    """One benchmark run: what it has started (closed by `stack`), and the report it fills."""

    sizes: Sizes
    stack: contextlib.ExitStack
    workdir: Path
    report: Report = field(default_factory=Report)
    info: dict = field(default_factory=machine)
    now_s: int = field(default_factory=lambda: int(time.time()))
    pg_admin: str | None = None
    pg_note: str = ""

    @property
    def now(self) -> datetime:
        return datetime.fromtimestamp(self.now_s, UTC)

    @property
    def t_backfill(self) -> int:
        """The backfill's `now`; the incremental runs come 10 and 20 minutes later, as scheduled syncs."""
        return self.now_s - 1200

    def engine(self, url: str) -> Engine:
        engine = store.open_store(url)
        self.stack.callback(engine.dispose)
        return engine

    def postgres(self) -> str | None:
        """A new database on the PostgreSQL server (None without one; pg_note says why)."""
        if not self.pg_admin:
            return None
        try:
            url = postgres_database(self.pg_admin, self.stack)
            self.info.setdefault("postgres", postgres_version(url))
            return url
        except Exception as e:  # noqa: BLE001 - no PostgreSQL rows then, and the table says why
            shown = make_url(self.pg_admin).render_as_string()
            reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
            self.pg_note, self.pg_admin = f"skipped: cannot create a database on {shown}: {reason}", None
            return None

    # 1. Backfill (and 6: again on PostgreSQL), then 3. incremental runs on the SQLite store.
    def backfill(self, emu: Emulator) -> tuple[Engine, Engine | None]:
        sizes, report = self.sizes, self.report
        log(f"naive loop: {sizes.objects:,} sessions through auto_paging_iter, one request at a time")
        naive = naive_loop(emu, 0 if sizes.quick else 10_000)
        log(f"naive loop: {naive[0]:,} sessions, {naive[2]:,} requests, {naive[1]:.1f} s")
        if naive[0] != sizes.objects:
            report.notes.append(f"The naive loop saw {naive[0]:,} sessions, not {sizes.objects:,}.")
        engine = self.engine(f"sqlite:///{self.workdir / 'monitor.db'}")
        pg_url = self.postgres()
        pg_engine = self.engine(pg_url) if pg_url else None
        for where, target in (("SQLite", engine), ("PostgreSQL", pg_engine)):
            if target is None:
                continue
            emu.reset_stats()
            log(f"our sync ({where} store, STRIPE_RATE_LIMIT={sizes.rate_limit:g})")
            ours = our_sync(target, emu.base_url, sizes.rate_limit, now=self.t_backfill, label="sync")
            stats = emu.stats()
            log(
                f"our sync: {ours.result.total:,} objects, {ours.result.requests:,} requests, {ours.result.seconds:.1f} s"
            )
            backfill_rows(report, where, sizes.objects, ours, naive, sizes.rate_limit, sizes.latency_ms)
            if stored_sessions(target) != sizes.objects:
                report.notes.append(
                    f"Our sync stored {stored_sessions(target):,} sessions in {where}, not {sizes.objects:,}."
                )
            report.notes.append(
                f"Backfill ({where}): the emulator answered our {stats['requests']:,} requests with "
                f"{stats['rate_limited']:,} 429s (it enforces Stripe's live limit, {STRIPE_LIVE_LIMIT}/s, as "
                "a token bucket)."
            )
        return engine, pg_engine

    def incremental(self, emu: Emulator, engine: Engine) -> None:
        sizes, report = self.sizes, self.report
        log("incremental sync: nothing new")
        quiet = our_sync(
            engine, emu.base_url, sizes.rate_limit, now=self.t_backfill + 600, label="incremental"
        )
        report.add(
            "Incremental sync, 0 new objects: requests",
            count(quiet.result.requests),
            "",
            f"≤ {QUIET_REQUESTS} (1 per resource + 1 for events)",
            quiet.result.requests <= QUIET_REQUESTS,
        )
        k = sizes.new_objects
        log(f"incremental sync: {k:,} new sessions")
        fresh = bench_sessions(k, self.t_backfill + 1199, prefix="cs_new", email="new", spacing=598 / k)
        for chunk in _chunks(fresh, 1000):
            emu.add(chunk)
        busy = our_sync(
            engine, emu.base_url, sizes.rate_limit, now=self.t_backfill + 1200, label="incremental"
        )
        expected = QUIET_REQUESTS + -(-k // 100)
        allowed = int(expected + 0.5 * k / 100)
        report.add(
            f"Incremental sync, {k:,} new sessions: requests",
            count(busy.result.requests),
            "",
            f"≈ {expected} ({QUIET_REQUESTS} + {k:,}/100); met when ≤ {allowed}",
            busy.result.requests <= allowed,
        )
        report.notes.append(
            f"Incremental: the backfill, the quiet run and the busy run are given `now` 10 minutes apart; "
            f"the {k:,} new sessions were added through POST /_emulator/objects, created within the last 10 "
            f"minutes; the busy run fetched {busy.result.objects.get('checkout_sessions', 0):,} sessions."
        )
        if stored_sessions(engine) != sizes.objects + k:
            report.notes.append(
                f"After the busy run the store holds {stored_sessions(engine):,} sessions, not {sizes.objects + k:,}."
            )

    # 2. Rate-bound.
    def rate_bound(self, emu: Emulator) -> None:
        sizes, report = self.sizes, self.report
        engine = self.engine(f"sqlite:///{self.workdir / 'rate.db'}")
        log(
            f"rate-bound sync: {sizes.rate_bound_objects:,} sessions, latency 0, limit {RATE_BOUND_LIMIT:g}/s"
        )
        emu.reset_stats()
        limited = our_sync(engine, emu.base_url, RATE_BOUND_LIMIT, now=self.t_backfill, label="rate-bound")
        achieved = limited.result.requests / limited.result.seconds if limited.result.seconds else 0.0
        share = achieved / RATE_BOUND_LIMIT
        report.add(
            f"Rate-bound sync ({sizes.rate_bound_objects:,} sessions, 0 ms latency): requests/s",
            f"{achieved:.1f} ({share:.0%})",
            f"limit {RATE_BOUND_LIMIT:g}/s",
            f"≥ {RATE_GOAL:.0%} of the limit",
            share >= RATE_GOAL,
        )
        report.add(
            "Rate-bound sync: most requests started in any 1 s",
            count(limited.max_per_second),
            f"limit {RATE_BOUND_LIMIT:g}/s",
            f"≤ {RATE_BOUND_LIMIT:g}",
            limited.max_per_second <= RATE_BOUND_LIMIT,
        )
        report.notes.append(
            f"Rate-bound: {limited.result.requests:,} requests over the whole sync ({limited.result.seconds:.1f} s, "
            "planning to last write); the sliding-window limiter lets a full second's worth go at once, so a "
            f"short run shows a little over 100 %. The emulator, enforcing Stripe's test-mode "
            f"{STRIPE_TEST_LIMIT}/s, answered {emu.stats()['rate_limited']:,} of them 429."
        )

    # 4. Reconciliation.
    def reconciliation(self) -> None:
        n, big = self.sizes.recon_rows, self.sizes.rows
        sqlite_store = f"sqlite:///{self.workdir / 'recon.db'}"
        sqlite_app = f"sqlite:///{self.workdir / 'recon-app.db'}"
        log(f"reconciliation: writing {n:,} payments to a store and their rows to an app database")
        saved, rows = build_recon_store(sqlite_store, n, self.now_s)
        build_app_db(sqlite_app, rows)
        pairs = [("SQLite", sqlite_store, "SQLite", sqlite_app)]
        pg_app, pg_store = self.postgres(), self.postgres()
        if pg_app and pg_store:
            log(
                "reconciliation: the same rows in an app database on PostgreSQL, the same objects in a store there"
            )
            build_app_db(pg_app, rows)
            build_recon_store(pg_store, n, self.now_s)
            pairs += [
                ("SQLite", sqlite_store, "PostgreSQL", pg_app),
                ("PostgreSQL", pg_store, "PostgreSQL", pg_app),
            ]
        del rows
        for store_on, store_url, app_on, app_url in pairs:
            self._reconcile_against_naive(
                store_on, store_url, app_on, app_url, mapping=app_on == store_on == "SQLite"
            )
        self.report.notes.append(
            f"Reconciliation ({n:,} payments): {saved:,} Stripe objects saved by store.save_objects (which keeps "
            "the `payments` table up to date as it saves); the app's rows in the default schema with indexes on "
            "its three Stripe id columns (the naive loop uses them; the bulk read does not)."
        )

        big_store = f"sqlite:///{self.workdir / 'recon-big.db'}"
        big_app = f"sqlite:///{self.workdir / 'recon-big-app.db'}"
        log(
            f"reconciliation: writing {big:,} payments to a store and their rows to an app database (minutes)"
        )
        started = time.perf_counter()
        big_saved, big_rows = build_recon_store(big_store, big, self.now_s)
        build_app_db(big_app, big_rows)
        built_s = time.perf_counter() - started
        del big_rows
        log(f"reconciliation: {big:,} payments × {big:,} rows (child process)")
        ours, total, first = self._reconcile_in_child(big_store, big_app, big)
        label = f"Reconcile {ours['payments']:,} payments × {ours['rows']:,} rows (store on SQLite, app DB on SQLite)"
        self.report.add(f"{label}: read both sides", seconds(ours["read_s"]))
        self.report.add(f"{label}: reconcile()", seconds(ours["reconcile_s"]))
        self.report.add(
            f"{label}: read + reconcile",
            seconds(total),
            "",
            f"≤ {RECONCILE_GOAL_S:g} s",
            total <= RECONCILE_GOAL_S,
        )
        self.report.add(
            f"{label}: the first run in a new process (readers starting), read + reconcile",
            seconds(first),
            "",
            f"≤ {RECONCILE_GOAL_S:g} s",
            first <= RECONCILE_GOAL_S,
        )
        self.report.add(
            f"{label}: peak memory (the whole child process)",
            mib(ours["peak_mib"]),
            "",
            f"≤ {MEMORY_GOAL_MIB / 1024:g} GiB",
            ours["peak_mib"] <= MEMORY_GOAL_MIB,
        )
        self.report.notes.append(
            f"Reconciliation ({ours['payments']:,} payments): {big_saved:,} Stripe objects and {ours['rows']:,} app "
            f"rows written in {seconds(built_s)}; read {seconds(ours['read_s'])} (peak "
            f"{mib(ours['read_peak_mib'])} after it), reconcile {seconds(ours['reconcile_s'])}, peak "
            f"{mib(ours['peak_mib'])} (the interpreter with pandas loaded is {mib(ours['baseline_mib'])}); "
            f"{ours['findings']:,} findings {ours['by_kind']}."
        )

    def _reconcile_in_child(self, store_url: str, app_url: str, n: int) -> tuple[dict, float, float]:
        """(the child's figures, read + reconcile of its later run, of its first run)."""
        ours = run_child(
            ["reconcile-store", "--store", store_url, "--app", app_url, "--now", str(self.now_s)],
            f"reconciling {n:,} payments",
        )
        total = ours["read_s"] + ours["reconcile_s"]
        first = ours["first_read_s"] + ours["first_reconcile_s"]
        log(
            f"  read {ours['read_s']:.2f} s, reconcile {ours['reconcile_s']:.2f} s (first run {first:.2f} s), "
            f"peak {ours['peak_mib']:.0f} MiB"
        )
        return ours, total, first

    def _reconcile_against_naive(
        self, store_on: str, store_url: str, app_on: str, app_url: str, *, mapping: bool
    ) -> None:
        """Ours in a child process, then the naive per-payment loop, over the same store and app database."""
        report, where = self.report, f"store on {store_on}, app DB on {app_on}"
        log(f"reconciliation: {self.sizes.recon_rows:,} payments, {where} (child process)")
        ours, ours_s, first_s = self._reconcile_in_child(store_url, app_url, self.sizes.recon_rows)
        log(f"naive reconciliation: one query per payment to the app database on {app_on}")
        naive_read, naive_loop_s, _, naive_kinds = naive_reconcile(
            store_url, app_url, self.now, through_mapping=False, limit=None
        )
        naive_s = naive_read + naive_loop_s
        log(f"  naive: {naive_s:.1f} s")
        label = f"Reconcile {ours['payments']:,} payments × {ours['rows']:,} rows ({where})"
        report.add(f"{label}: read both sides", seconds(ours["read_s"]))
        report.add(f"{label}: reconcile()", seconds(ours["reconcile_s"]))
        report.add(
            f"{label}: the first run in a new process (readers starting), read + reconcile", seconds(first_s)
        )
        ratio = naive_s / ours_s if ours_s else 0.0
        report.add(
            f"{label}: total vs naive, one bare SQL query per payment",
            seconds(ours_s),
            seconds(naive_s),
            f"{ratio:.1f}× (goal ≥ {RECONCILE_RATIO_GOAL:g}×)",
            ratio >= RECONCILE_RATIO_GOAL,
        )
        if mapping:
            sample = min(self.sizes.mapping_sample, ours["payments"])
            log(
                f"naive reconciliation through AppDatabase.rows_for_payment: {sample:,} payments, extrapolated"
            )
            _, m_loop, m_done, _ = naive_reconcile(
                store_url, app_url, self.now, through_mapping=True, limit=sample
            )
            mapping_s = naive_read + m_loop * (ours["payments"] / max(m_done, 1))
            ratio = mapping_s / ours_s if ours_s else 0.0
            report.add(
                f"{label}: total vs naive, one AppDatabase.rows_for_payment per payment (extrapolated from {m_done:,})",
                seconds(ours_s),
                seconds(mapping_s),
                f"{ratio:.1f}× (goal ≥ {RECONCILE_RATIO_GOAL:g}×)",
                ratio >= RECONCILE_RATIO_GOAL,
            )
            report.add(f"{label}: peak memory (the whole child process)", mib(ours["peak_mib"]))
            report.notes.append(
                f"Reconciliation ({ours['payments']:,} payments): ours found {ours['findings']:,} {ours['by_kind']}; "
                f"the naive loop {sum(naive_kinds.values()):,} {naive_kinds}: it judges less (no "
                "active_without_payment, no latest-payment rules), so its time is a lower bound."
            )
        if naive_s < RECONCILE_RATIO_GOAL * ours_s:
            per_query = naive_loop_s / max(ours["payments"], 1) * 1e6
            per_payment = ours_s / max(ours["payments"], 1) * 1e6
            report.notes.append(
                f"Reconciliation, {where}: the ratio is bounded by how cheap one query is here: "
                f"{per_query:.0f} µs a payment for the naive loop against {per_payment:.1f} µs a payment for "
                f"ours (reading {len(PAYMENT_COLUMNS) + len(SUBSCRIPTION_COLUMNS)} values and deciding); "
                f"{RECONCILE_RATIO_GOAL:g}× would need ours under {per_query / RECONCILE_RATIO_GOAL:.1f} µs a "
                f"payment, while reconcile() alone takes {ours['reconcile_s'] / max(ours['payments'], 1) * 1e6:.1f}."
            )
        report.notes.append(
            f"Reconciliation, {where}: both sides read at once in {seconds(ours['read_s'])}, reconcile "
            f"{seconds(ours['reconcile_s'])}; naive: payments read in bulk in {seconds(naive_read)}, then one "
            f"query per payment in {seconds(naive_loop_s)} "
            f"({naive_loop_s / max(ours['payments'], 1) * 1e6:.0f} µs a payment)."
        )

    # 5. Dashboard reads (and 6: again on PostgreSQL).
    def dashboard(self, engines: list[tuple[str, Engine]], app_source: Engine) -> None:
        app_url = f"sqlite:///{self.workdir / 'dashboard-app.db'}"
        dashboard_app_db(app_url, app_source)
        app = AppDatabase(app_url, load_mapping("default"))
        self.stack.callback(app.dispose)
        n = self.sizes.findings
        for where, engine in engines:
            log(f"dashboard ({where}): writing {n:,} findings through lifecycle.apply_findings")
            sample, took = seed_dashboard(engine, n, self.now)
            if engine.dialect.name == "postgresql":
                with engine.begin() as conn:  # what autovacuum does soon after a bulk write
                    conn.execute(text("ANALYZE"))
            self.report.notes.append(
                f"Dashboard ({where}): lifecycle.apply_findings wrote {n:,} findings in {seconds(took)}."
            )
            log(f"dashboard ({where}): timing the reads, best of 3")
            view_rows(self.report, where, time_views(engine, app, sample, self.now), n)


def run(sizes: Sizes, argv_shown: str, out: Path) -> Report:
    started = datetime.now(UTC)
    with contextlib.ExitStack() as stack:
        workdir = Path(tempfile.mkdtemp(prefix="ppm-bench-"))
        stack.callback(shutil.rmtree, workdir, ignore_errors=True)
        log(f"working in {workdir}")
        bench = Bench(sizes, stack, workdir)

        # The two emulators load their sessions in parallel (and PostgreSQL starts) before the first figure.
        fixtures, rate_fixtures = workdir / "sessions.json", workdir / "rate-sessions.json"
        write_fixtures(fixtures, bench_sessions(sizes.objects, bench.now_s - DAY))
        write_fixtures(rate_fixtures, bench_sessions(sizes.rate_bound_objects, bench.now_s - DAY))
        log(
            f"wrote {sizes.objects:,} sessions; starting the emulators (latency {sizes.latency_ms:g} ms and 0 ms)"
        )
        live_limit = STRIPE_LIVE_LIMIT if sizes.rate_limit <= STRIPE_LIVE_LIMIT else None
        emu = Emulator("backfill", fixtures, workdir, latency_ms=sizes.latency_ms, rate_limit=live_limit)
        stack.callback(emu.stop)
        bound = Emulator("rate-bound", rate_fixtures, workdir, latency_ms=0, rate_limit=STRIPE_TEST_LIMIT)
        stack.callback(bound.stop)
        bench.pg_admin, bench.pg_note = postgres_server(sizes.postgres, stack)
        emu.wait_ready()
        bound.wait_ready()
        log(f"emulators ready on {emu.base_url} and {bound.base_url}")

        engine, pg_engine = bench.backfill(emu)
        bench.incremental(emu, engine)
        emu.stop()
        bench.rate_bound(bound)
        bound.stop()
        bench.reconciliation()
        engines = [("SQLite", engine)] + ([("PostgreSQL", pg_engine)] if pg_engine is not None else [])
        bench.dashboard(engines, engine)
        if pg_engine is None:
            bench.report.add("PostgreSQL (backfill and dashboard again)", bench.pg_note)
        bench.info["postgres_note"] = bench.pg_note
    bench.info["load_end"] = _load()
    written = render(bench.report, bench.info, sizes, argv_shown, started, datetime.now(UTC))
    print(written)
    out.write_text(written + "\n")
    log(f"wrote {out}")
    return bench.report


def render(
    report: Report, info: dict, sizes: Sizes, argv_shown: str, started: datetime, finished: datetime
) -> str:
    minutes = (finished - started).total_seconds() / 60
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python -m monitor.bench`); run it again to refresh. Issue 8 names the goals.",
        "",
        f"- Machine: {info['cpu']}, {info['cores']} cores ({info['usable']} usable), {info['memory']}, {info['system']}",
        f"- Load average at start {info['load']}, at the end {info.get('load_end', '?')} (a shared machine: "
        "figures vary from run to run)",
        f"- Python {info['python']}, SQLite {info['sqlite']}, PostgreSQL "
        f"{info.get('postgres', '—')} ({info.get('postgres_note', '')})",
        f"- Date: {started:%Y-%m-%d %H:%M} UTC, {minutes:.1f} minutes",
        f"- Options: `python -m monitor.bench {argv_shown}`".rstrip()
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(child_reconcile(args)))
        return 0
    sizes = sizes_from(args)
    shown = " ".join(
        [
            f"--objects {sizes.objects}",
            f"--latency-ms {sizes.latency_ms:g}",
            f"--rate-limit {sizes.rate_limit:g}",
            f"--rows {sizes.rows}",
            f"--postgres {'URL' if sizes.postgres not in ('auto', 'off') else sizes.postgres}",
            *(["--quick"] if sizes.quick else []),
        ]
    )

    def terminate(signum, frame):  # noqa: ARG001 - signal handler signature
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, terminate)
    try:
        report = run(sizes, shown, args.out)
    except KeyboardInterrupt:
        log("interrupted: everything the benchmark started has been stopped")
        return 130
    except BenchError as e:
        log(f"error: {e}")
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    missed = report.missed()
    if missed:
        log(f"{len(missed)} goal(s) missed: " + "; ".join(r.measure for r in missed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
