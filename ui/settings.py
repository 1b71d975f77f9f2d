"""The settings in force, as the Infrastructure page shows them: every secret masked.

Secrets are never shown, only recognised: a Stripe key by its kind and last four characters, a URL with
its password replaced by `****`, an alert target by its scheme and host. Everything passes through
`Config.mask` last, so a secret that turns up where it was not expected is masked too.
"""

from __future__ import annotations

import pandas as pd

from monitor import demo
from monitor.alerts import target_name
from monitor.config import SETTINGS, Config, Setting
from monitor.secrets import mask_url, mask_value


def _value(cfg: Config, setting: Setting) -> str:
    name = setting.name
    if name == "ALERT_URLS":
        return ", ".join(target_name(u, cfg) for u in cfg.alert_urls)
    value = getattr(cfg, name.lower(), None)
    if value is None or value in ((), {}, ""):
        return ""
    if isinstance(value, dict):
        return ", ".join(f"{k}={mask_url(str(v))}" for k, v in value.items())
    if isinstance(value, (tuple, list)):
        return ", ".join(mask_url(str(v)) for v in value)
    text = str(value)
    return mask_value(text) if setting.secret else mask_url(text)


def demo_values(cfg: Config) -> dict[str, str]:
    """In demo mode, what is running in place of a setting's default, as monitor.demo decides it; nothing
    otherwise. A setting given explicitly is shown as given."""
    if not demo.active(cfg):
        return {}
    emulator = "demo: the built-in Stripe emulator, in-process on a local port, with a key of its own"
    said = {
        "STRIPE_API_KEY": "none: demo mode (" + emulator.removeprefix("demo: ") + ")",
        "STRIPE_API_BASE": emulator,
        "STRIPE_RATE_LIMIT": "demo: none (the in-process emulator needs no limit)",
        "sign-in": f"demo: {demo.operator(cfg)} acts in every session, without signing in",
    }
    url = demo.expected_webhook_url(cfg)
    if url and not cfg.expected_webhook_url:
        said["EXPECTED_WEBHOOK_URL"] = f"demo: {url} (the demo's production URL; never contacted)"
    if not cfg.operator_roles:
        said["OPERATOR_ROLES"] = (
            f"demo: everyone is {demo.everyone_role(cfg)} ({demo.operator(cfg)} among them)"
        )
    redis = ", ".join(f"{k}={mask_url(str(v))}" for k, v in cfg.redis_urls.items())
    said["REDIS_URLS"] = f"{redis} (demo: probed live, so a Redis that is not running here shows as down)"
    return said


def frame(cfg: Config, sign_in: str | None) -> pd.DataFrame:
    """One row per setting: its name, the value in force (masked; in demo mode what the demo runs instead
    of a default), and what it means."""
    running = demo_values(cfg)
    rows = [
        (
            s.name,
            cfg.mask(running.get(s.name) or _value(cfg, s) or f"(default) {s.default}".replace("`", "")),
            s.meaning.replace("`", ""),
        )
        for s in SETTINGS
    ]
    rows.append(
        (
            "sign-in",
            running.get("sign-in") or sign_in or "none: read-only",
            "how operators are identified (README, Security)",
        )
    )
    return pd.DataFrame(rows, columns=["setting", "value", "meaning"])
