"""Settings of the test project. The database comes from PPM_DJANGO_DATABASE, a URL as the monitor takes it
(`sqlite:///PATH` or `postgresql://USER@HOST:PORT/NAME`); PPM_DJANGO_APPS picks what is installed:
`payments` (the incident's kind of app) or `djstripe` (dj-stripe, as its installation guide sets it up)."""

import os
from urllib.parse import unquote, urlsplit

SECRET_KEY = "test-only-not-secret"
DEBUG = False
USE_TZ = True
TIME_ZONE = "UTC"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"


def _database(url: str) -> dict:
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        return {"ENGINE": "django.db.backends.sqlite3", "NAME": unquote(parts.path[1:])}
    if parts.scheme in ("postgresql", "postgresql+psycopg"):
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": unquote(parts.path.lstrip("/")),
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
        }
    raise ValueError(f"PPM_DJANGO_DATABASE: unsupported URL scheme {parts.scheme!r}")


DATABASES = {"default": _database(os.environ["PPM_DJANGO_DATABASE"])}

APPS = os.environ.get("PPM_DJANGO_APPS", "payments")
INSTALLED_APPS = ["django.contrib.contenttypes", "django.contrib.auth"]
if APPS == "payments":
    INSTALLED_APPS.append("apps.payments")
elif APPS == "djstripe":
    INSTALLED_APPS.append("djstripe")
    # What dj-stripe's installation guide asks for; the keys are never used (nothing talks to Stripe).
    STRIPE_LIVE_SECRET_KEY = "sk_live_unused"
    STRIPE_TEST_SECRET_KEY = "sk_test_unused"
    STRIPE_LIVE_MODE = False
    DJSTRIPE_FOREIGN_KEY_TO_FIELD = "id"
    DJSTRIPE_WEBHOOK_SECRET = "whsec_unused"
else:
    raise ValueError(f"PPM_DJANGO_APPS={APPS!r}: expected payments or djstripe")
