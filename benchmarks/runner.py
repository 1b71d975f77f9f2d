"""`python -m benchmarks`: the options, then every measurement in order in one run whose processes are all
stopped when it ends (also on Ctrl-C, SIGTERM or an error); the table to stdout and to --out."""

from __future__ import annotations

import argparse
import contextlib
import shutil
import signal
import tempfile
from datetime import UTC, datetime
from pathlib import Path

from benchmarks.backfill import backfill
from benchmarks.context import Bench, Sizes
from benchmarks.dashboard import dashboard
from benchmarks.harness import ROOT, STRIPE_LIVE_LIMIT, STRIPE_TEST_LIMIT, BenchError, Emulator, log
from benchmarks.incremental import incremental
from benchmarks.postgres import postgres_server
from benchmarks.rate_bound import rate_bound
from benchmarks.reconciliation import reconciliation
from benchmarks.reconciliation_large import reconciliation_large
from benchmarks.report import Report, load_average, render
from benchmarks.sessions import DAY, bench_sessions, write_fixtures

DEFAULT_OUT = ROOT / "BENCHMARKS.md"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m benchmarks",
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
        help="auto: start a server with testbed.servers (default); off: skip; or a server URL whose user "
        "may create databases",
    )
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where to write the table (BENCHMARKS.md)")
    p.add_argument("--quick", action="store_true", help="tiny sizes, no PostgreSQL: a smoke test")
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

        engine, pg_engine = backfill(bench, emu)
        incremental(bench, emu, engine)
        emu.stop()
        rate_bound(bench, bound)
        bound.stop()
        reconciliation(bench)
        reconciliation_large(bench)
        engines = [("SQLite", engine)] + ([("PostgreSQL", pg_engine)] if pg_engine is not None else [])
        dashboard(bench, engines, engine)
        if pg_engine is None:
            bench.report.add("PostgreSQL (backfill and dashboard again)", bench.pg_note)
        bench.info["postgres_note"] = bench.pg_note
    bench.info["load_end"] = load_average()
    written = render(bench.report, bench.info, sizes, argv_shown, started, datetime.now(UTC))
    print(written)
    out.write_text(written + "\n")
    log(f"wrote {out}")
    return bench.report


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
