"""Mapping files: the worked Django example of docs/mapping.md (read from the page itself) against the tables
Django's migrations create for the incident's kind of app (tests/django_app), on SQLite and PostgreSQL,
through the command line; and every mistake a mapping can hold, each one line naming it."""

from __future__ import annotations

import json
import re
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from monitor.app_db import AppDatabase, load_mapping
from monitor.emulator import server
from monitor.errors import MappingError
from tests.conftest import REPO_ROOT
from tests.django_app import harness
from tests.stripe_cast import REDIS_ERROR, Account, findings_of, known_cases

KEY = "sk_test_mapping"


def example_mapping() -> str:
    """The Django example's mapping TOML, as docs/mapping.md shows it."""
    blocks = re.findall(r"```toml\n(.*?)```", (REPO_ROOT / "docs" / "mapping.md").read_text(), re.S)
    [block] = [b for b in blocks if "FROM payments_subscription" in b]
    return block


def write_mapping(tmp_path: Path, toml: str, name: str = "mapping.toml") -> Path:
    path = tmp_path / name
    path.write_text(toml)
    return path


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def django_db(request, tmp_path) -> str:
    """URL of a database holding the test project's tables, made by Django's migrations."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'django.sqlite3'}"
    else:
        url = request.getfixturevalue("postgres_url")
    try:
        harness.migrate(url, "payments")
    except harness.MigrationFailed as e:
        pytest.fail(str(e), pytrace=False)
    return url


# --- the Django app's rows ---------------------------------------------------------------------------------


def write_django_rows(url: str, a: Account, emails: list[str], log: list[dict]) -> dict[str, int]:
    """auth_user rows for `emails`, the account's rows as payments_subscription rows owned by them, and the
    app's webhook audit; the users' ids by e-mail."""
    engine = create_engine(url)
    pg = engine.dialect.name == "postgresql"

    def when(value: str | None):
        if value is None or not pg:
            return value
        return datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)

    users = {email: n for n, email in enumerate(emails, start=1)}
    joined = when(datetime.fromtimestamp(a.now - 90 * 86400, UTC).strftime("%Y-%m-%d %H:%M:%S"))
    with engine.begin() as conn:
        for email, uid in users.items():
            conn.execute(
                text(
                    "INSERT INTO auth_user (id, password, is_superuser, username, first_name, last_name, email, "
                    "is_staff, is_active, date_joined) VALUES (:id, '!', false, :username, '', '', :email, false, "
                    "true, :joined)"
                ),
                {"id": uid, "username": email.split("@")[0], "email": email, "joined": joined},
            )
        for r in a.rows:
            conn.execute(
                text(
                    "INSERT INTO payments_subscription (id, user_id, plan, stripe_customer, stripe_session, "
                    "stripe_intent, stripe_sub, price_cents, price_currency, state, created, activated, period_end) "
                    "VALUES (:id, :user_id, :plan, :cus, :cs, :pi, :sub, :amount, :currency, :state, :created, "
                    ":activated, :period_end)"
                ),
                {
                    "id": r["id"],
                    "user_id": users[r["customer_email"]],
                    "plan": r["plan"],
                    "cus": r["stripe_customer_id"],
                    "cs": r["stripe_checkout_session_id"],
                    "pi": r["stripe_payment_intent_id"],
                    "sub": r["stripe_subscription_id"],
                    "amount": r["amount"],
                    "currency": r["currency"],
                    "state": r["status"].upper(),
                    "created": when(r["created_at"]),
                    "activated": when(r["activated_at"]),
                    "period_end": when(r["current_period_end"]),
                },
            )
        for entry in log:
            conn.execute(
                text(
                    "INSERT INTO payments_webhookaudit (event_id, kind, received, handled, ok, message) "
                    "VALUES (:event_id, :kind, :received, :handled, :ok, :message)"
                ),
                {**entry, "received": when(entry["received"]), "handled": when(entry["handled"])},
            )
        if pg:  # the rows came with their ids: move the identity past them, as Django's loaddata does
            for table in ("auth_user", "payments_subscription"):
                conn.execute(
                    text(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), MAX(id)) FROM {table}")
                )
    engine.dispose()
    return users


def build_cases(url: str) -> tuple[Account, set[tuple[str, str]], dict]:
    a = Account(int(time.time()))
    expect, pays = known_cases(a)
    fine, never, pending = pays["fine"], pays["never"], pays["pending"]
    expect.add(("webhook_failed", never["evt"]))  # the app's log below records its failure

    def stamp(ts: int) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")

    log = [
        {
            "event_id": fine["evt"],
            "kind": "checkout.session.completed",
            "received": stamp(fine["created"] + 3),
            "handled": stamp(fine["created"] + 4),
            "ok": True,
            "message": "",
        },
        {
            "event_id": never["evt"],
            "kind": "checkout.session.completed",
            "received": stamp(never["created"] + 3),
            "handled": None,
            "ok": False,
            "message": REDIS_ERROR,
        },
    ]
    emails = [
        f"{n}@example.com" for n in ("alice", "bob", "carol", "dave", "frank", "grace", "heidi", "ivan")
    ]
    users = write_django_rows(url, a, emails, log)
    return a, expect, {"never": never, "pending": pending, "users": users}


# --- the worked example, end to end ------------------------------------------------------------------------


def test_the_docs_django_example_finds_every_case_and_repairs_through_its_templates(
    cli_main, django_db, tmp_path
):
    mapping = write_mapping(tmp_path, example_mapping())
    a, expect, cases = build_cases(django_db)
    with server.start(a.objects, api_key=KEY) as emulator:
        env = {
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": emulator.base_url,
            "APP_DATABASE_URL": django_db,
            "APP_SCHEMA": str(mapping),
            "OPERATOR_ROLES": "ann=support",
        }
        check = cli_main(["mapping", "check"], env)
        assert check.returncode == 0, check.stderr
        assert "[subscriptions] ok: 7 rows, 6 in an active status" in check.stdout
        assert "[webhook_log] ok: 2 rows" in check.stdout
        assert cli_main(["sync"], env).returncode == 0
        run = cli_main(["reconcile", "--json"], env)
        assert run.returncode == 0, run.stderr
        report = json.loads(run.stdout)
        assert findings_of(report) == expect
        failed = next(f for f in report["findings"] if f["kind"] == "webhook_failed")
        assert REDIS_ERROR in failed["hint"]

        created = cli_main(["repair", cases["never"]["cs"], "--operator", "ann"], env)
        assert created.returncode == 0, created.stdout + created.stderr
        assert created.stdout.startswith("CREATED: ")
        activated = cli_main(["repair", cases["pending"]["cs"], "--operator", "ann"], env)
        assert activated.returncode == 0, activated.stdout + activated.stderr
        assert activated.stdout.startswith("ACTIVATED: ")
        again = json.loads(cli_main(["reconcile", "--json"], env).stdout)
    assert findings_of(again) == expect - {
        ("paid_without_subscription", cases["never"]["cs"]),
        ("subscription_not_active", cases["pending"]["cs"]),
    }
    engine = create_engine(django_db)
    with engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT user_id, state, price_cents, price_currency, stripe_session FROM payments_subscription "
                "WHERE stripe_session IN (:bob, :carol) ORDER BY user_id"
            ),
            {"bob": cases["never"]["cs"], "carol": cases["pending"]["cs"]},
        ).all()
    engine.dispose()
    users = cases["users"]
    assert [tuple(r) for r in rows] == [
        (users["bob@example.com"], "ACTIVE", 14900, "usd", cases["never"]["cs"]),
        (users["carol@example.com"], "ACTIVE", 14900, "usd", cases["pending"]["cs"]),
    ]


# --- mistakes in the file: found when it is loaded -----------------------------------------------------------

EXAMPLE_MISTAKES = [
    pytest.param(("", "\n[alerts]\nurl = 'x'\n"), "unknown section [alerts]", id="unknown-section"),
    pytest.param(
        ('active_statuses = ["ACTIVE"]', 'active_statuses = ["ACTIVE"]\nactive_status = ["ACTIVE"]'),
        "[subscriptions]: unknown key 'active_status'; known: query, active_statuses",
        id="unknown-key",
    ),
    pytest.param(
        ('ok_statuses = ["processed"]', 'ok_status = ["processed"]'),
        "[webhook_log]: unknown key 'ok_status'",
        id="unknown-log-key",
    ),
    pytest.param(
        (
            "[repair]\n",
            "[repair]\ndeactivate = \"UPDATE payments_subscription SET state = 'X' WHERE id = :id\"\n",
        ),
        "[repair]: unknown template 'deactivate'; known: activate, create",
        id="unknown-template",
    ),
    pytest.param(
        ("WHERE id = :id", "WHERE id = :row_id"),
        "[repair] activate: unknown parameter(s) :row_id; allowed: :id, :now",
        id="unknown-parameter",
    ),
    pytest.param(
        (":currency, 'ACTIVE'", ":plan, 'ACTIVE'"),
        "[repair] create: unknown parameter(s) :plan",
        id="create-param",
    ),
    pytest.param(
        ("WHERE id = :id", "WHERE state = 'PENDING'"),
        "[repair] activate: does not use :id",
        id="activate-no-id",
    ),
    pytest.param(
        ('active_statuses = ["ACTIVE"]', "active_statuses = []"),
        "[subscriptions]: active_statuses is empty",
        id="no-active-status",
    ),
    pytest.param(
        ('active_statuses = ["ACTIVE"]', 'active_statuses = "ACTIVE"'),
        "[subscriptions]: active_statuses must be a list of status strings",
        id="active-not-a-list",
    ),
    pytest.param(
        ('active_statuses = ["ACTIVE"]', ""), "[subscriptions]: no active_statuses", id="active-missing"
    ),
    pytest.param(
        ('ok_statuses = ["processed"]', "ok_statuses = []"),
        "[webhook_log]: ok_statuses is empty",
        id="no-ok-status",
    ),
    pytest.param(
        ('ok_statuses = ["processed"]', 'optional = "yes"'),
        "[webhook_log]: optional must be true or false",
        id="optional-not-bool",
    ),
    pytest.param(
        ("ON u.id = s.user_id\n", "ON u.id = s.user_id WHERE s.plan <> 'tier :gold'\n"),
        "[subscriptions]: query contains :gold, which would be read as a bound parameter",
        id="bind-in-query",
    ),
    pytest.param(
        ('ok_statuses = ["processed"]', 'ok_statuses = ["processed"'), "not valid TOML", id="not-toml"
    ),
]


@pytest.mark.parametrize(("edit", "message"), EXAMPLE_MISTAKES)
def test_a_mistake_in_the_mapping_is_one_line_naming_it(tmp_path, edit, message):
    old, new = edit
    source = example_mapping()
    assert old in source
    broken = write_mapping(tmp_path, source.replace(old, new, 1) if old else source + new)
    with pytest.raises(MappingError) as raised:
        load_mapping(str(broken))
    said = str(raised.value)
    assert message in said
    assert said.startswith(f"mapping {broken}")
    assert "\n" not in said


def _without_log_query(source: str) -> str:
    head, log = source.split("[webhook_log]\n", 1)
    log = re.sub(r'query = """.*?"""\n', "", log, count=1, flags=re.S)
    return f"{head}[webhook_log]\n{log}"


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (_without_log_query, "[webhook_log]: no query (a SELECT returning event_id, type, received_at"),
        (
            lambda s: s.replace("[subscriptions]\nquery", "[subscriptions]\nsql", 1),
            "[subscriptions]: unknown key 'sql'",
        ),
        (
            lambda s: re.sub(r'\[subscriptions\]\nquery = """.*?"""\n', "[subscriptions]\n", s, flags=re.S),
            "no query",
        ),
        (
            lambda s: s.split("[webhook_log]")[0].replace("[subscriptions]", "[subscription]"),
            "unknown section [subscription]",
        ),
        (lambda s: "[webhook_log]" + s.split("[webhook_log]")[1], "no [subscriptions] section"),
        (
            lambda s: s.replace('query = """\nSELECT s.id', 'query = 42\nx = """\nSELECT s.id', 1),
            "unknown key 'x'",
        ),
        (
            lambda s: 'subscriptions = "SELECT 1"\n',
            "subscriptions must be a [subscriptions] section, not a string",
        ),
    ],
    ids=[
        "log-without-query",
        "query-misnamed",
        "no-query",
        "section-misnamed",
        "no-subscriptions",
        "extra-key",
        "not-a-table",
    ],
)
def test_a_missing_or_misplaced_part_is_one_line_naming_it(tmp_path, make, message):
    broken = write_mapping(tmp_path, make(example_mapping()))
    with pytest.raises(MappingError) as raised:
        load_mapping(str(broken))
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_query_that_is_not_a_string_is_named(tmp_path):
    source = re.sub(
        r'\[subscriptions\]\nquery = """.*?"""', "[subscriptions]\nquery = 42", example_mapping(), flags=re.S
    )
    with pytest.raises(
        MappingError, match=r"\[subscriptions\]: query must be a SELECT returning id, email, .* not number 42"
    ):
        load_mapping(str(write_mapping(tmp_path, source)))


def test_the_presets_load_and_the_djstripe_preset_has_no_repair_templates():
    assert load_mapping("default").repair.keys() == {"activate", "create"}
    djstripe = load_mapping("djstripe")
    assert djstripe.repair == {}
    assert djstripe.active_statuses == ("active", "trialing")
    assert djstripe.webhook_log_query and not djstripe.webhook_log_optional


# --- mistakes that show when the queries run on the database -------------------------------------------------


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("AS current_period_end", "AS period_end_wrong", "returns no column current_period_end"),
        (
            "FROM payments_subscription s",
            "FROM payments_subscriptions s",
            "has no table payments_subscriptions",
        ),
        ("s.stripe_sub AS", "s.stripe_subscription AS", "has no column s.stripe_subscription"),
    ],
    ids=["canonical-column", "table", "column"],
)
def test_a_query_that_does_not_fit_the_database_names_what_is_missing(django_db, tmp_path, old, new, message):
    broken = write_mapping(tmp_path, example_mapping().replace(old, new, 1))
    app = AppDatabase(django_db, load_mapping(str(broken)))
    try:
        with pytest.raises(MappingError) as raised:
            app.read_subscriptions()
    finally:
        app.dispose()
    assert message in str(raised.value)
    assert "[subscriptions]" in str(raised.value)
    assert "\n" not in str(raised.value)


def test_a_webhook_log_query_that_fails_names_its_table(django_db, tmp_path):
    broken = write_mapping(
        tmp_path, example_mapping().replace("FROM payments_webhookaudit", "FROM payments_webhooklog")
    )
    app = AppDatabase(django_db, load_mapping(str(broken)))
    try:
        assert app.read_subscriptions().empty
        with pytest.raises(
            MappingError, match=r"\[webhook_log\] query fails .*has no table payments_webhooklog"
        ):
            app.read_webhook_log()
    finally:
        app.dispose()


@pytest.mark.parametrize(
    ("old", "new", "named"),
    [
        ('active_statuses = ["ACTIVE"]', "active_statuses = []", "active_statuses is empty"),
        (
            "[repair]\n",
            "[repair]\nrollback = 'DELETE FROM payments_subscription'\n",
            "unknown template 'rollback'",
        ),
        (
            "FROM payments_subscription s",
            "FROM payments_subscriptions s",
            "has no table payments_subscriptions",
        ),
        ("AS current_period_end", "AS period_end_wrong", "returns no column current_period_end"),
    ],
    ids=["empty-statuses", "unknown-template", "missing-table", "missing-column"],
)
def test_mapping_check_says_what_is_wrong_in_one_line_with_exit_2(cli_main, tmp_path, old, new, named):
    url = f"sqlite:///{tmp_path / 'django.sqlite3'}"
    harness.migrate(url, "payments")
    broken = write_mapping(tmp_path, example_mapping().replace(old, new, 1))
    run = cli_main(
        ["mapping", "check"], {"STRIPE_API_KEY": KEY, "APP_DATABASE_URL": url, "APP_SCHEMA": str(broken)}
    )
    assert run.returncode == 2, run.stdout + run.stderr
    assert named in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    assert "Traceback" not in run.stdout + run.stderr
