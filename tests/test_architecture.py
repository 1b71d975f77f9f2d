"""The house rules of DESIGN.md "Layout", checked on the source, folder by folder: which layers each folder
of `monitor/` may import, that the pure rules touch no database, network, clock or UI, and that each
outside system is touched by one folder only. A new module is checked by the folder it is put in."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MONITOR = ROOT / "monitor"
SOURCES = sorted(p for p in MONITOR.rglob("*.py") if "migrations" not in p.parts)
FOLDERS = sorted(p.name for p in MONITOR.iterdir() if p.is_dir() and (p / "__init__.py").exists())

# The layers of monitor/ each folder may import (besides itself). Top-level modules (config, errors, cli,
# pipeline, …) are the entry points' and may import any folder; folders never import them, but for
# `config`, `errors`, `secrets` (masking) and `clock` (now), which every layer needs; the pure rules are
# given `now` and import none of them.
ALLOWED = {
    "rules": set(),
    "store": {"clock", "rules", "config", "errors", "secrets"},
    "stripe_api": {"clock", "store", "rules", "config", "errors", "secrets"},
    "app_db": {"clock", "store", "rules", "config", "errors", "secrets"},
    "views": {"clock", "store", "app_db", "rules", "config", "errors", "secrets"},
    "emulator": {"app_db", "rules"},
}
# What the pure rules may not import: no database, network, clock, Stripe or UI.
IMPURE = {"sqlalchemy", "socket", "requests", "redis", "stripe", "time", "urllib", "streamlit", "psycopg"}
# The one folder or module allowed to import each outside system's library.
OWNERS = {
    "stripe": {"monitor/stripe_api/source.py"},
    "redis": {"monitor/probes.py", "monitor/secrets.py"},  # secrets only parses URLs as redis-py will
    "apprise": {"monitor/alerts.py"},
}


def imports_of(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            if node.module == "monitor":
                names |= {f"monitor.{a.name}" for a in node.names}
    return names


def top(name: str) -> str:
    return name.split(".")[0]


def layer(module: str) -> str | None:
    """The folder or top-level module of `monitor` a dotted name is in."""
    parts = module.split(".")
    return parts[1] if parts[0] == "monitor" and len(parts) > 1 else None


def folder_of(path: Path) -> str | None:
    parts = path.relative_to(MONITOR).parts
    return parts[0] if len(parts) > 1 else None


def rel(path: Path) -> str:
    return str(path.relative_to(ROOT))


def test_every_folder_of_monitor_has_its_rule():
    assert set(FOLDERS) == set(ALLOWED)


@pytest.mark.parametrize("path", SOURCES, ids=rel)
def test_monitor_never_imports_the_pages_the_jobs_streamlit_or_apscheduler(path):
    assert not {top(n) for n in imports_of(path)} & {
        "pages",
        "jobs",
        "dashboard",
        "ui",
        "streamlit",
        "apscheduler",
    }


@pytest.mark.parametrize("path", [p for p in SOURCES if folder_of(p)], ids=rel)
def test_a_folder_imports_only_the_layers_it_may(path):
    folder = folder_of(path)
    used = {layer(n) for n in imports_of(path)} - {None, folder}
    assert used <= ALLOWED[folder], f"{rel(path)} imports {sorted(used - ALLOWED[folder])}"


@pytest.mark.parametrize("path", sorted((MONITOR / "rules").rglob("*.py")), ids=rel)
def test_the_pure_rules_touch_no_database_network_clock_stripe_or_ui(path):
    used = {top(n) for n in imports_of(path)}
    assert not used & IMPURE, f"{rel(path)} imports {sorted(used & IMPURE)}"


@pytest.mark.parametrize("library", sorted(OWNERS))
def test_each_outside_system_is_reached_through_one_module(library):
    users = {rel(p) for p in SOURCES if library in {top(n) for n in imports_of(p)}}
    assert users == OWNERS[library]


def test_the_product_has_few_top_level_modules_and_none_over_600_lines():
    top_level = [p for p in MONITOR.glob("*.py")]
    assert len(top_level) <= 15, sorted(p.name for p in top_level)
    long = {rel(p): n for p in SOURCES if (n := len(p.read_text().splitlines())) > 600}
    assert not long


def test_the_architecture_test_fails_for_a_pure_rule_that_imports_sqlalchemy(tmp_path):
    """The check above is not vacuous: a rules module importing SQLAlchemy is caught."""
    bad = tmp_path / "bad.py"
    bad.write_text("import sqlalchemy\nfrom streamlit import write\n")
    assert {top(n) for n in imports_of(bad)} & IMPURE == {"sqlalchemy", "streamlit"}
