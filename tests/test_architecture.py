"""The house rules of DESIGN.md "Layout", checked on the source: dependencies point inward, and each outside
system is touched by one module only."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MONITOR = sorted((ROOT / "monitor").rglob("*.py"))


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def top(name: str) -> str:
    return name.split(".")[0]


@pytest.mark.parametrize("path", MONITOR, ids=lambda p: str(p.relative_to(ROOT)))
def test_monitor_never_imports_the_pages_the_jobs_streamlit_or_apscheduler(path):
    assert not {top(n) for n in imports_of(path)} & {"pages", "jobs", "dashboard", "streamlit", "apscheduler"}


def test_only_the_stripe_module_imports_stripe():
    users = {str(p.relative_to(ROOT)) for p in MONITOR if "stripe" in {top(n) for n in imports_of(p)}}
    assert users == {"monitor/stripe_source.py"}


def test_the_pure_decisions_touch_no_database_network_or_clock():
    for name in (
        "reconcile.py",
        "findings.py",
        "webhook_health.py",
        "outages.py",
        "root_cause.py",
        "timefmt.py",
        "money.py",
    ):
        used = {top(n) for n in imports_of(ROOT / "monitor" / name)}
        assert not used & {"sqlalchemy", "socket", "requests", "redis", "stripe", "time", "urllib"}, name
