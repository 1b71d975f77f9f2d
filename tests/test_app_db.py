"""The app's database through the default mapping, on SQLite and on a real PostgreSQL server."""

from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy import create_engine, text

from monitor.app_db import SUBSCRIPTION_COLUMNS, AppDatabase, create_default_schema, load_mapping
from monitor.errors import AppDatabaseError, MappingError
from tests.stripe_cast import REDIS_ERROR

ROWS = [
    # paid_and_active, linked by checkout session
    {
        "id": 1,
        "customer_email": "alice@example.com",
        "stripe_customer_id": "cus_alice",
        "stripe_checkout_session_id": "cs_alice",
        "stripe_payment_intent_id": None,
        "stripe_subscription_id": None,
        "plan": "annual",
        "amount": 14900,
        "currency": "USD",
        "status": "active",
        "created_at": "2026-11-20 10:00:05",
        "activated_at": "2026-11-20 10:00:06",
        "current_period_end": "2027-11-20 10:00:00",
    },
    # pending_row: never activated, no amount recorded
    {
        "id": 2,
        "customer_email": "carol@example.com",
        "stripe_customer_id": None,
        "stripe_checkout_session_id": "cs_carol",
        "stripe_payment_intent_id": None,
        "stripe_subscription_id": None,
        "plan": None,
        "amount": None,
        "currency": None,
        "status": "pending",
        "created_at": "2026-11-21 09:00:00",
        "activated_at": None,
        "current_period_end": None,
    },
]
LOG = [
    {
        "stripe_event_id": "evt_incident",
        "type": "checkout.session.completed",
        "received_at": "2026-11-26 10:58:03",
        "processed_at": None,
        "status": "failed",
        "error": REDIS_ERROR,
    }
]


def fill(url: str, rows=ROWS, log=LOG) -> None:
    create_default_schema(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        for row in rows:
            conn.execute(
                text(
                    f"INSERT INTO subscriptions ({','.join(row)}) VALUES ({','.join(':' + k for k in row)})"
                ),
                row,
            )
        for row in log:
            conn.execute(
                text(
                    f"INSERT INTO webhook_events ({','.join(row)}) VALUES ({','.join(':' + k for k in row)})"
                ),
                row,
            )
    engine.dispose()


@pytest.fixture
def app_url(sqlite_or_postgres_url):
    return sqlite_or_postgres_url


def test_it_reads_subscriptions_with_the_canonical_columns_and_utc_times(app_url):
    fill(app_url)
    app = AppDatabase(app_url, load_mapping("default"))
    subs = app.read_subscriptions()
    app.engine.dispose()
    assert tuple(subs.columns) == SUBSCRIPTION_COLUMNS
    alice = subs[subs["id"] == 1].iloc[0]
    assert alice["email"] == "alice@example.com"
    assert alice["checkout_session_id"] == "cs_alice"
    assert alice["amount"] == 14900
    assert alice["created_at"] == pd.Timestamp("2026-11-20 10:00:05", tz="UTC")
    carol = subs[subs["id"] == 2].iloc[0]
    assert pd.isna(carol["payment_intent_id"])  # text as pandas strings: missing is NaN
    assert subs["payment_intent_id"].dtype == "str"
    assert pd.isna(carol["amount"])
    assert pd.isna(carol["current_period_end"])


def test_it_reads_the_apps_webhook_log(app_url):
    fill(app_url)
    app = AppDatabase(app_url, load_mapping("default"))
    log = app.read_webhook_log()
    app.engine.dispose()
    assert log.iloc[0]["event_id"] == "evt_incident"
    assert log.iloc[0]["error"] == REDIS_ERROR


def test_a_missing_webhook_log_table_is_no_log_in_the_default_schema(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    fill(url)
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE webhook_events"))
    engine.dispose()
    assert AppDatabase(url, load_mapping("default")).read_webhook_log() is None


def test_a_missing_subscriptions_table_is_a_mapping_error_naming_it(app_url):
    engine = create_engine(app_url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE other (id INTEGER)"))
    engine.dispose()
    app = AppDatabase(app_url, load_mapping("default"))
    with pytest.raises(MappingError, match="subscriptions"):
        app.read_subscriptions()
    app.engine.dispose()


def test_a_missing_column_is_a_mapping_error_naming_it(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE subscriptions (id INTEGER, customer_email TEXT)"))
    engine.dispose()
    with pytest.raises(MappingError, match="stripe_customer_id"):
        AppDatabase(url, load_mapping("default")).read_subscriptions()


def test_a_mapping_query_without_a_canonical_column_names_the_column(tmp_path):
    url = f"sqlite:///{tmp_path / 'app.db'}"
    fill(url)
    preset = (Path(__file__).resolve().parents[1] / "monitor/app_db/presets/default.toml").read_text()
    broken = tmp_path / "broken.toml"
    broken.write_text(preset.replace("AS current_period_end", "AS period_end_wrong"))
    with pytest.raises(MappingError, match="current_period_end"):
        AppDatabase(url, load_mapping(str(broken))).read_subscriptions()


def test_a_repair_template_with_an_unknown_parameter_is_refused(tmp_path):
    mapping = tmp_path / "m.toml"
    mapping.write_text(
        '[subscriptions]\nquery = "SELECT 1"\nactive_statuses = ["active"]\n'
        '[repair]\nactivate = "UPDATE s SET x = :evil WHERE id = :id"\n'
    )
    with pytest.raises(MappingError, match=":evil"):
        load_mapping(str(mapping))


def test_a_missing_sqlite_file_is_a_clear_error_and_is_not_created(tmp_path):
    path = tmp_path / "nowhere.db"
    with pytest.raises(AppDatabaseError, match="does not exist"):
        AppDatabase(f"sqlite:///{path}", load_mapping("default"))
    assert not path.exists()


def test_an_unreachable_postgresql_server_is_an_app_database_error():
    from tests.services import free_port

    app = AppDatabase(f"postgresql://app:secret@127.0.0.1:{free_port()}/app", load_mapping("default"))
    with pytest.raises(AppDatabaseError, match="cannot connect") as error:
        app.read_subscriptions()
    assert "secret" not in str(error.value)
