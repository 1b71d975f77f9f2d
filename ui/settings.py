"""The settings in force, as the Infrastructure page shows them: every secret masked.

Secrets are never shown, only recognised: a Stripe key by its kind and last four characters, a URL with
its password replaced by `****`, an alert target by its scheme and host. Everything passes through
`Config.mask` last, so a secret that turns up where it was not expected is masked too.
"""

from __future__ import annotations

import pandas as pd

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


def frame(cfg: Config, sign_in: str | None) -> pd.DataFrame:
    """One row per setting: its name, the value in force (masked), and what it means."""
    rows = [
        (
            s.name,
            cfg.mask(_value(cfg, s)) or f"(default) {s.default}".replace("`", ""),
            s.meaning.replace("`", ""),
        )
        for s in SETTINGS
    ]
    rows.append(("sign-in", sign_in or "none: read-only", "how operators are identified (README, Security)"))
    return pd.DataFrame(rows, columns=["setting", "value", "meaning"])
