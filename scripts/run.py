"""`make run`: the whole default setup in one terminal, stopped with Ctrl-C.

Demo mode (no STRIPE_API_KEY): one sync first, so the demo (the built-in Stripe emulator's scenario and the
demo app database) exists and the dashboard has data at once; then the jobs process (`python -m jobs`,
which starts the emulator in-process for each sync) and the dashboard. With a real STRIPE_API_KEY: the
jobs process (its first sync starts at once) and the dashboard.

Ctrl-C or SIGTERM stops every child (SIGTERM, then SIGKILL after a timeout) and exits 0; a child that
dies on its own stops the others and its exit status is ours.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_S = 15


def _stop(children: list[tuple[str, subprocess.Popen]]) -> None:
    for _, child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + STOP_TIMEOUT_S
    for name, child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            print(f"{name} did not stop within {STOP_TIMEOUT_S} s: killed", flush=True)
            child.kill()
            child.wait()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="make run", description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8501, help="the dashboard's port (default 8501)")
    args = parser.parse_args(argv)

    sys.path.insert(0, str(ROOT))
    from monitor import config as config_module
    from monitor import demo

    try:
        cfg = config_module.load()
    except config_module.ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    stop = {"signal": None}

    def on_signal(signum, _frame):
        stop["signal"] = signum

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    python = sys.executable
    if demo.active(cfg):
        print(
            "demo mode (no STRIPE_API_KEY): the built-in Stripe emulator serves the demo scenario, "
            f"the demo app database is {config_module.mask_url(cfg.app_database_url)}",
            flush=True,
        )
        first = subprocess.run([python, "-m", "monitor", "sync"], cwd=ROOT, check=False)
        if first.returncode != 0:
            return first.returncode
    else:
        print(f"real mode: Stripe at {cfg.stripe_api_base}; the jobs process syncs at once", flush=True)
    if stop["signal"] is not None:
        return 0

    children: list[tuple[str, subprocess.Popen]] = []
    jobs = subprocess.Popen([python, "-m", "jobs"], cwd=ROOT)
    children.append(("the jobs process", jobs))
    print(
        f"started the jobs process (pid {jobs.pid}): sync every {cfg.sync_interval} s, probes every {cfg.probe_interval} s",
        flush=True,
    )

    dashboard = subprocess.Popen(
        [
            python, "-m", "streamlit", "run", "dashboard.py",
            "--server.headless", "true",
            "--server.port", str(args.port),
            "--server.address", "127.0.0.1",
            "--browser.gatherUsageStats", "false",
        ],
        cwd=ROOT,
    )  # fmt: skip
    children.append(("the dashboard", dashboard))
    shown = " (the demo scenario)" if demo.active(cfg) else ""
    print(f"dashboard{shown}: http://127.0.0.1:{args.port}   Ctrl-C stops everything", flush=True)

    status = 0
    while stop["signal"] is None:
        ended = [(name, child) for name, child in children if child.poll() is not None]
        if ended:
            name, child = ended[0]
            print(f"{name} stopped by itself (exit status {child.returncode}): stopping the rest", flush=True)
            status = child.returncode if child.returncode >= 0 else 1
            break
        time.sleep(0.2)
    _stop(children)
    if stop["signal"] is not None:
        print("stopped", flush=True)
    return status


if __name__ == "__main__":
    os.chdir(ROOT)
    sys.exit(main())
