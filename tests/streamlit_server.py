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

from tests.services import REPO_ROOT, clean_env, free_port

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
    """The dashboard's menu (ui/menu.py, st.page_link in the sidebar): {label: href}, Overview first."""
    links = page.locator("[data-testid='stSidebar'] [data-testid='stPageLink'] a")
    found = {}
    for i in range(links.count()):
        link = links.nth(i)
        label = link.inner_text()
        icon = link.locator("[data-testid='stIconMaterial']")
        if icon.count():  # the icon is a ligature: its name is text
            label = label.replace(icon.first.inner_text(), "", 1)
        found[label.strip()] = link.get_attribute("href")
    return found
