"""The service fixtures start real servers that behave like the ones in production."""

from __future__ import annotations

import os
import socket

import pytest
import redis
import sqlalchemy as sa

from tests.services import clean_env, free_port


def _engine(url: str) -> sa.Engine:
    return sa.create_engine(url, connect_args={"connect_timeout": 10})


@pytest.mark.postgres
def test_postgres_url_is_a_fresh_database_that_sqlalchemy_can_write(postgres_url):
    engine = _engine(postgres_url)
    try:
        assert engine.dialect.driver == "psycopg"
        with engine.begin() as conn:
            assert conn.scalar(sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")) == 0
            conn.execute(sa.text("CREATE TABLE subscriptions (id INTEGER PRIMARY KEY, status TEXT NOT NULL)"))
            conn.execute(sa.text("INSERT INTO subscriptions VALUES (1, 'active')"))
        with engine.connect() as conn:
            assert conn.scalar(sa.text("SELECT status FROM subscriptions WHERE id = 1")) == "active"
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_postgres_databases_of_one_server_are_independent(postgres_server, postgres_url):
    with postgres_server.temporary_database() as other_url:
        assert other_url != postgres_url
        first, second = _engine(postgres_url), _engine(other_url)
        try:
            with first.begin() as conn:
                conn.execute(sa.text("CREATE TABLE only_in_first (id INTEGER)"))
            assert sa.inspect(first).has_table("only_in_first")
            assert not sa.inspect(second).has_table("only_in_first")
        finally:
            first.dispose()
            second.dispose()


@pytest.mark.postgres
def test_postgres_database_is_dropped_even_with_a_connection_left_open(postgres_server):
    with postgres_server.temporary_database() as url:
        engine = _engine(url)
        conn = engine.connect()
        conn.execute(sa.text("SELECT 1"))
        name = url.rsplit("/", 1)[1]
    conn.invalidate()
    engine.dispose()
    admin = _engine(postgres_server.url())
    try:
        with admin.connect() as c:
            assert c.scalar(sa.text("SELECT count(*) FROM pg_database WHERE datname = :n"), {"n": name}) == 0
    finally:
        admin.dispose()


@pytest.mark.redis
def test_redis_server_answers_ping(redis_server):
    client = redis.Redis.from_url(redis_server, socket_timeout=1, retry=None)
    try:
        assert client.ping() is True
        client.set("parity", "ok")
        assert client.get("parity") == b"ok"
    finally:
        client.close()


@pytest.mark.redis
def test_password_protected_redis_refuses_a_client_without_the_password(redis_factory):
    server = redis_factory(password="s3cret")
    # retry=None: redis-py 8 retries AuthenticationError (a ConnectionError) with backoff by default.
    anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=1, retry=None)
    wrong = redis.Redis(host="127.0.0.1", port=server.port, password="wrong", socket_timeout=1, retry=None)
    right = redis.Redis.from_url(server.url, socket_timeout=1, retry=None)
    try:
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        assert right.ping() is True
    finally:
        for client in (anonymous, wrong, right):
            client.close()


@pytest.mark.redis
def test_a_stopped_redis_refuses_connections_until_restarted_on_its_port(redis_factory):
    server = redis_factory()
    server.stop()
    client = redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=1, retry=None)
    try:
        with pytest.raises(redis.ConnectionError, match="111"):
            client.ping()
        redis_factory(port=server.port)
        assert client.ping() is True
    finally:
        client.close()


def test_sqlite_url_points_into_the_test_directory(sqlite_url, tmp_path):
    assert sqlite_url == f"sqlite:///{tmp_path}/test.db"
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (id INTEGER)"))
    finally:
        engine.dispose()
    assert (tmp_path / "test.db").exists()


def test_free_port_can_be_bound():
    with socket.socket() as s:
        s.bind(("127.0.0.1", free_port()))


def test_cli_environment_drops_the_callers_monitor_settings(monkeypatch, tmp_env):
    monkeypatch.setenv("STRIPE_API_KEY", "sk_live_from_the_developers_shell")
    monkeypatch.setenv("GRACE_MINUTES", "99")
    env = clean_env({**tmp_env, "GRACE_MINUTES": "5"})
    assert "STRIPE_API_KEY" not in env
    assert env["GRACE_MINUTES"] == "5"
    assert env["MONITOR_DATABASE_URL"] == tmp_env["MONITOR_DATABASE_URL"]
    assert env["PATH"] == os.environ["PATH"]
