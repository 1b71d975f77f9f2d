"""The benchmark (`make bench`) runs end to end at smoke-test sizes. Timings are not asserted: a shared
machine makes them vary; BENCHMARKS.md holds the figures of a real run."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.services import clean_env


def _processes_mentioning(marker: str) -> list[str]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if marker in cmdline:
            found.append(cmdline)
    return found


@pytest.mark.slow
def test_quick_benchmark_prints_and_writes_one_table_and_stops_what_it_started(tmp_path):
    out = tmp_path / "BENCHMARKS.md"
    work = tmp_path / "work"
    work.mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=REPO_ROOT,
        env=clean_env({"TMPDIR": str(work)}),  # the emulators' fixtures live under here
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=280,
    )
    assert done.returncode == 0, done.stderr[-4000:]

    written = out.read_text()
    header = "| measure | ours | naive / limit | ratio or goal | met? |"
    assert header in written and header in done.stdout
    table = [line for line in written.splitlines() if line.startswith("| ")]
    for measure in (
        "objects/s",
        "most requests started in any 1 s",
        "Incremental sync, 0 new objects",
        "Rate-bound sync",
        "reconcile()",
        "total vs naive, one bare SQL query per payment",
        "peak memory",
        "Dashboard (SQLite",
    ):
        assert any(measure in line for line in table), measure
    assert all(line.count("|") - line.count("\\|") == 6 for line in table)  # five columns each
    assert "- Machine: " in written and "- Python " in written and "- Date: " in written
    assert "[bench" in done.stderr  # progress went to stderr

    assert not _processes_mentioning(str(work)), "an emulator outlived the benchmark"
    assert not list(work.iterdir()), "the benchmark left its working directory behind"
