"""The decisions of demo mode (monitor.demo), which the runs, the probes and the pages ask instead of testing
`config.demo` themselves: what each says in demo mode and with a real key."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitor import demo
from monitor.config import Config, load
from monitor.emulator.demo_names import DEMO_EXPECTED_WEBHOOK_URL, INCIDENT_EMAIL

REAL_KEY = {"STRIPE_API_KEY": "sk_test_pipeline_demo", "APP_DATABASE_URL": "sqlite:///app.db"}
EXPECTED = "https://app.example.org/stripe/webhook"


def settings(tmp_path: Path, **env: str) -> Config:
    return load(env, toml_path=tmp_path / "none.toml")


@pytest.mark.parametrize(
    ("env", "asked", "answer"),
    [
        ({}, demo.active, True),
        (REAL_KEY, demo.active, False),
        ({}, demo.operator, demo.OPERATOR),
        (REAL_KEY, demo.operator, None),
        ({}, demo.everyone_role, "admin"),
        (REAL_KEY, demo.everyone_role, None),
        ({}, demo.shows_error_details, True),
        (REAL_KEY, demo.shows_error_details, False),
        ({}, demo.sample_customer, INCIDENT_EMAIL),
        (REAL_KEY, demo.sample_customer, None),
        ({}, demo.contacts_webhook_url, False),
        (REAL_KEY, demo.contacts_webhook_url, True),
        ({}, demo.expected_webhook_url, DEMO_EXPECTED_WEBHOOK_URL),
        ({"EXPECTED_WEBHOOK_URL": EXPECTED}, demo.expected_webhook_url, EXPECTED),
        (REAL_KEY, demo.expected_webhook_url, None),
        ({**REAL_KEY, "EXPECTED_WEBHOOK_URL": EXPECTED}, demo.expected_webhook_url, EXPECTED),
        (REAL_KEY, demo.unprobed, {}),
        (REAL_KEY, demo.check_probes, {}),
    ],
    ids=lambda v: v.__name__ if callable(v) else None,
)
def test_each_decision_of_demo_mode(tmp_path, env, asked, answer):
    assert asked(settings(tmp_path, **env)) == answer


def test_demo_mode_leaves_the_stripe_api_alone_and_the_expected_url_when_one_is_set(tmp_path):
    assert set(demo.unprobed(settings(tmp_path))) == {"stripe_api"}
    assert set(demo.unprobed(settings(tmp_path, EXPECTED_WEBHOOK_URL=EXPECTED))) == {
        "stripe_api",
        "webhook_endpoint",
    }


def test_a_real_key_is_used_as_configured_with_its_rate_limit(tmp_path):
    cfg = settings(tmp_path, **REAL_KEY)
    with demo.stripe_endpoint(cfg) as stripe:
        assert stripe == demo.StripeEndpoint(cfg.stripe_api_key, cfg.stripe_api_base, cfg.stripe_rate_limit)
    assert stripe.rate_limit  # a test key's default limit


def test_a_real_key_never_creates_a_demo_app_database(tmp_path):
    cfg = settings(tmp_path, STRIPE_API_KEY="sk_test_x", APP_DATABASE_URL=f"sqlite:///{tmp_path / 'app.db'}")
    demo.prepare_app_database(cfg)
    assert not (tmp_path / "app.db").exists()
