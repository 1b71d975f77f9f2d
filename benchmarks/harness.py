"""What every measurement shares: progress on stderr, the environment of child processes, and the Stripe
emulator in a subprocess with its admin endpoints."""

from __future__ import annotations

import json
import os
import selectors
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson

from testbed.servers import free_port

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk_test_bench"
STRIPE_LIVE_LIMIT = 100  # what Stripe allows a live key (the main emulator enforces it)
STRIPE_TEST_LIMIT = 25  # what Stripe allows a test key (the rate-bound emulator enforces it)


class BenchError(RuntimeError):
    """A step of the benchmark could not run; the message says which and why."""


_STARTED = time.monotonic()


def log(message: str) -> None:
    print(f"[bench {time.monotonic() - _STARTED:5.0f} s] {message}", file=sys.stderr, flush=True)


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_child(module: str, arguments: list[str], what: str, timeout: float = 1800) -> dict:
    """Run `python -m MODULE ARGUMENTS` and return the JSON it prints last."""
    try:
        done = subprocess.run(
            [sys.executable, "-m", module, *arguments],
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
