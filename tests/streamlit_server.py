"""The dashboard as a real `streamlit run` child process, and Chromium through Playwright, for the tests that
drive it as a person would (sign-in, hostile input, canary secrets)."""

from __future__ import annotations

import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from tests.services import REPO_ROOT, clean_env, free_port, run_cli

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]


@dataclass
class Served:
    url: str
    port: int
    log: Path
    process: subprocess.Popen

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def wait_for(url: str, process: subprocess.Popen | None, log: Path | None, timeout: float = 60) -> None:
    """Until `url` answers 200, or fail with the child's log."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        if (process is not None and process.poll() is not None) or time.monotonic() > deadline:
            said = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
            raise RuntimeError(f"{url} never answered:\n{said}")
        time.sleep(0.2)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def dashboard(
    env: dict[str, str],
    log: Path,
    *,
    port: int | None = None,
    script: str = "dashboard.py",
    args: Sequence[str] = (),
) -> Iterator[Served]:
    """`streamlit run SCRIPT` from the repository root (so `.streamlit/config.toml` applies) with only the
    monitor settings in `env`, its output in `log`; yields once /_stcore/health answers."""
    port = port or free_port()
    with log.open("a") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                script,
                "--server.headless",
                "true",
                "--server.port",
                str(port),
                "--server.address",
                "127.0.0.1",
                "--browser.gatherUsageStats",
                "false",
                "--server.fileWatcherType",
                "none",
                *args,
            ],
            cwd=REPO_ROOT,
            env=clean_env({"PYTHONPATH": str(REPO_ROOT), **env}),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(f"http://127.0.0.1:{port}/_stcore/health", process, log)
            yield Served(f"http://127.0.0.1:{port}", port, log, process)
        finally:
            stop(process)


def settle(page, timeout: float = 90_000) -> None:
    """Wait until the app is connected and its script has run (every page has a title) and finished."""
    page.wait_for_selector("[data-testid='stAppViewContainer']", state="attached", timeout=timeout)
    page.wait_for_timeout(300)
    page.locator("[data-testid='stApp'][data-test-connection-state='CONNECTED']").wait_for(
        state="attached", timeout=timeout
    )
    page.locator("[data-testid='stApp'][data-test-script-state='notRunning']").wait_for(
        state="attached", timeout=timeout
    )
    page.locator("[data-testid='stMain'] h1").first.wait_for(state="attached", timeout=timeout)  # it ran
    page.wait_for_timeout(500)


def go(page, url: str, href: str) -> None:
    """Open `href` (absolute, or a path under the dashboard at `url`) and wait for it to settle."""
    page.goto(href if href.startswith("http") else f"{url}/{href.lstrip('/')}")
    settle(page)


def main_text(page) -> str:
    return page.locator("[data-testid='stMain']").first.inner_text()


def sidebar_text(page) -> str:
    return page.locator("[data-testid='stSidebar']").first.inner_text()


def sidebar_pages(page) -> dict[str, str]:
    """Streamlit's menu in the sidebar: {label: href}, the main page ("Overview") first."""
    links = page.locator("[data-testid='stSidebarNav'] a")
    return {
        links.nth(i).inner_text().strip(): links.nth(i).get_attribute("href") for i in range(links.count())
    }


@contextmanager
def demo_dashboard(where: Path) -> Iterator[tuple[str, dict[str, str], Path]]:
    """The demo, synced and reconciled by the CLI in `where`, served by `streamlit run dashboard.py`:
    (URL, environment, where). Fails the test at once when Chromium is missing."""
    import pytest

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: `make system` installs Debian's chromium", pytrace=False)
    env = clean_env(
        {
            "MONITOR_DATABASE_URL": f"sqlite:///{where / 'monitor.db'}",
            "APP_DATABASE_URL": f"sqlite:///{where / 'app.db'}",
        }
    )
    for step in (["sync"], ["reconcile"]):
        done = run_cli(step, env)
        assert done.returncode == 0, done.stdout + done.stderr
    with dashboard(env, where / "streamlit.log") as served:
        yield served.url, env, where
