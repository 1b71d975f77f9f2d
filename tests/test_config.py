"""Settings: strict parsing, one clear line for a bad value, secrets masked, README in step."""

import dataclasses
import re
from pathlib import Path

import pytest

from monitor import config, secrets
from monitor.config import SETTINGS, Config, ConfigError, load

ROOT = Path(__file__).resolve().parents[1]


def test_no_settings_means_demo_mode_with_the_documented_defaults(tmp_path):
    cfg = load({}, toml_path=tmp_path / "none.toml")
    assert cfg.demo
    assert cfg.app_database_url == "sqlite:///data/demo_app.db"
    assert cfg.monitor_database_url == "sqlite:///data/monitor.db"
    assert cfg.stripe_api_base == "https://api.stripe.com"
    assert cfg.redis_urls == {"channels": "redis://localhost:6379/0"}
    assert cfg.grace_minutes == 10
    assert cfg.app_schema == "default"
    assert cfg.expected_webhook_url is None


def test_a_stripe_key_requires_the_app_database_url(tmp_path):
    with pytest.raises(ConfigError, match="APP_DATABASE_URL"):
        load({"STRIPE_API_KEY": "sk_test_abc123"}, toml_path=tmp_path / "none.toml")


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("GRACE_MINUTES", "soon", "whole number"),
        ("GRACE_MINUTES", "-5", "whole number"),
        ("STRIPE_API_KEY", "pk_test_publishable", "secret key"),
        ("STRIPE_API_BASE", "ftp://example.com", "http"),
        ("MONITOR_DATABASE_URL", "mysql://x/y", "sqlite:// or postgresql://"),
        ("APP_DATABASE_URL", "not a url", "SQLAlchemy database URL"),
        ("REDIS_URLS", "channels", "name=url"),
        ("REDIS_URLS", "channels=http://x", "redis://"),
        ("APP_SCHEMA", "nonsense", "mapping .toml"),
        ("EXPECTED_WEBHOOK_URL", "example.com/hook", "http"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_setting_and_what_is_expected(tmp_path, name, value, expected):
    with pytest.raises(ConfigError) as error:
        load({name: value}, toml_path=tmp_path / "none.toml")
    message = str(error.value)
    assert name in message
    assert expected in message
    assert "\n" not in message


def test_secrets_are_masked_in_messages_about_them(tmp_path):
    with pytest.raises(ConfigError) as error:
        load({"STRIPE_API_KEY": "sk_test_CANARY123456789!"}, toml_path=tmp_path / "none.toml")
    assert "CANARY123456789" not in str(error.value)
    with pytest.raises(ConfigError) as error:
        load({"REDIS_URLS": "channels=redis://:pwCANARY9@host:1/0,bad"}, toml_path=tmp_path / "none.toml")
    assert "pwCANARY9" not in str(error.value)


def test_the_configuration_masks_every_secret_it_holds(tmp_path):
    cfg = load(
        {
            "STRIPE_API_KEY": "sk_test_CANARY7f3a9c1e55d04b2",
            "APP_DATABASE_URL": "postgresql://app:dbCANARY55@db/app",
            "WEBHOOK_SECRET": "whsec_CANARY1b2c3d4e5f",
            "REDIS_URLS": "channels=redis://:pwCANARY9d8e7f6a@127.0.0.1:1/0",
        },
        toml_path=tmp_path / "none.toml",
    )
    text = "key sk_test_CANARY7f3a9c1e55d04b2 pw dbCANARY55 wh whsec_CANARY1b2c3d4e5f redis pwCANARY9d8e7f6a"
    assert "CANARY" not in cfg.mask(text)
    assert "CANARY" not in repr(cfg)


def test_the_environment_wins_over_monitor_toml(tmp_path):
    toml = tmp_path / "monitor.toml"
    toml.write_text('grace_minutes = 30\nexpected_webhook_url = "https://app.example.com/hook"\n')
    cfg = load({"GRACE_MINUTES": "5"}, toml_path=toml)
    assert cfg.grace_minutes == 5
    assert cfg.expected_webhook_url == "https://app.example.com/hook"


def test_an_unknown_key_in_monitor_toml_is_refused(tmp_path):
    toml = tmp_path / "monitor.toml"
    toml.write_text("grace_minute = 30\n")
    with pytest.raises(ConfigError, match="grace_minute"):
        load({}, toml_path=toml)


def test_config_has_one_field_per_setting_and_no_defaults_of_its_own():
    fields = {f.name: f for f in dataclasses.fields(Config)}
    assert set(fields) == {s.field for s in SETTINGS} | {"secrets"}
    assert all(
        f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING for f in fields.values()
    )


# Settings whose unset value a cross-setting rule decides (`config._apply_rules`).
RULED = {"APP_DATABASE_URL", "STRIPE_RATE_LIMIT"}


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.name not in RULED], ids=lambda s: s.name)
def test_an_unset_setting_takes_its_default(tmp_path, setting):
    assert getattr(load({}, tmp_path / "x.toml"), setting.field) == setting.default


@pytest.mark.parametrize(("key", "limit"), [(None, None), ("sk_test_abc123", 20), ("rk_live_abc123", 80)])
def test_the_rate_limit_defaults_by_the_keys_mode(tmp_path, key, limit):
    env = {"STRIPE_API_KEY": key, "APP_DATABASE_URL": "sqlite:///a.db"} if key else {}
    assert load(env, tmp_path / "x.toml").stripe_rate_limit == limit


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.bounds], ids=lambda s: s.name)
def test_a_number_past_its_bounds_is_refused_naming_them(tmp_path, setting):
    low, high = setting.bounds
    for value in (low - 1, high + 1):
        with pytest.raises(
            ConfigError, match=f"^{setting.name}='{value}' is not valid: .* from {low} to {high}$"
        ):
            load({setting.name: str(value)}, tmp_path / "x.toml")
    assert getattr(load({setting.name: str(high)}, tmp_path / "x.toml"), setting.field) == high


def test_the_proxy_header_needs_the_proxy_secret(tmp_path):
    with pytest.raises(
        ConfigError, match="^TRUSTED_PROXY_HEADER='X-Forwarded-Email' is set but TRUSTED_PROXY_SECRET is not"
    ):
        load({"TRUSTED_PROXY_HEADER": "X-Forwarded-Email"}, tmp_path / "x.toml")


def test_monitor_toml_accepts_every_setting(tmp_path):
    toml = tmp_path / "monitor.toml"
    toml.write_text("".join(f'{s.name.lower()} = ""\n' for s in SETTINGS))
    assert load({}, toml).demo


def test_readme_documents_exactly_the_settings_table():
    readme = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- settings-table.*?-->\n(.*?)<!-- /settings-table -->", readme, re.S)
    assert block, "README.md has no settings table block"
    assert block.group(1).strip() == config.settings_table().strip()


@pytest.mark.parametrize("setting", ["APP_DATABASE_URL", "MONITOR_DATABASE_URL"])
@pytest.mark.parametrize("password", ["pw#CANARY", "pw/CANARY", "pw[CANARY", "CANARY#pw"])
def test_a_database_password_urllib_cannot_read_is_one_of_the_secrets(tmp_path, setting, password):
    url = f"postgresql://app:{password}@[bad/app"
    cfg = load(
        {"STRIPE_API_KEY": "sk_test_abc123", setting: url, "APP_DATABASE_URL": url}, tmp_path / "x.toml"
    )
    assert "CANARY" not in cfg.mask(f"the URL {url}, the password {password}")
    assert "CANARY" not in repr(cfg)


@pytest.mark.parametrize(
    "value",
    [
        "redis://:pwCANARY@127.0.0.1:6379/0?ssl_cert_reqs=none",  # no name: not split at its query's `=`
        "channels=redis://:pw#CANARY@127.0.0.1:6379/0",
        "channels=redis://:CANARY/pw@127.0.0.1:6379/0",
        "channels=redis://:pw[CANARY@127.0.0.1:6379/0",
        "channels=redis://:CANARY@[bad/0",
        "channels=redis://:pw@h:6379/0,redis://:CANARY@h:6379/0?ssl_cert_reqs=none",
    ],
)
def test_a_redis_url_redis_py_cannot_use_is_one_masked_line(tmp_path, value):
    with pytest.raises(ConfigError) as error:
        load({"REDIS_URLS": value}, toml_path=tmp_path / "none.toml")
    message = str(error.value)
    assert message.startswith("REDIS_URLS=") and "\n" not in message
    assert "CANARY" not in message


def test_a_redis_url_with_a_query_and_a_name_is_accepted(tmp_path):
    value = "channels=redis://:pwCANARY@127.0.0.1:6379/0?ssl_cert_reqs=none"
    cfg = load({"REDIS_URLS": value}, toml_path=tmp_path / "none.toml")
    assert cfg.redis_urls == {"channels": "redis://:pwCANARY@127.0.0.1:6379/0?ssl_cert_reqs=none"}
    assert "CANARY" not in cfg.mask(value)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("STRIPE_API_BASE", "http://[::1"),
        ("EXPECTED_WEBHOOK_URL", "http://[x"),
        ("EXPECTED_WEBHOOK_URL", "https://app.example.com:hook/x"),
        ("STRIPE_API_BASE", "http://ops:CANARY@[::1"),
    ],
)
def test_an_http_url_that_cannot_be_parsed_is_one_line_naming_the_setting(tmp_path, name, value):
    with pytest.raises(ConfigError) as error:
        load({name: value}, toml_path=tmp_path / "none.toml")
    message = str(error.value)
    assert message.startswith(f"{name}=") and "\n" not in message
    assert "CANARY" not in message


def test_the_secrets_of_settings_that_do_not_parse_are_found_all_the_same(tmp_path):
    broken = tmp_path / "monitor.toml"
    broken.write_text("not toml at all [")
    env = {
        "ALERT_URLS": "CANARYalert",
        "REDIS_URLS": "redis://:CANARYredis@h/0?ssl_cert_reqs=none",
        "APP_DATABASE_URL": "postgresql://app:CANARYapp#x@[bad/app",
        "STRIPE_API_KEY": "not a key CANARYkey",
    }
    found = config.secrets_as_given(env, broken)
    assert "CANARY" not in secrets.mask_secrets(" ".join(env.values()), found)
