"""The project's own exception types. Library errors are translated into these at each module's seam.

Every message is one line, safe to print: no secrets, no traceback needed to understand it.
"""


class MonitorError(Exception):
    """Base class. The CLI prints the message and exits with `exit_status`."""

    exit_status = 1


class BadInput(MonitorError):
    """The user asked for something that cannot be done as asked (exit status 2)."""

    exit_status = 2


class StripeError(MonitorError):
    """Talking to Stripe failed. `http_status` is Stripe's answer (None when none came) and `code` its
    error code (`resource_missing`, `rate_limit`, …) when it gave one, so callers read the structure,
    never the text."""

    def __init__(self, message: str, *, http_status: int | None = None, code: str | None = None):
        super().__init__(message)
        self.http_status = http_status
        self.code = code


class StripeAuthError(StripeError):
    """Stripe rejected the API key (401) or its permissions (403)."""


class StripePermissionError(StripeAuthError):
    """Stripe refused one request (403): a restricted key without the permission it needs. `permission`
    names it as the Dashboard does (e.g. "Checkout Sessions: read"); other requests may still succeed."""

    def __init__(self, message: str, *, permission: str, http_status: int | None = 403, code=None):
        super().__init__(message, http_status=http_status, code=code)
        self.permission = permission


class StripeRequestError(StripeError):
    """Stripe refused the request itself (400, 404)."""


class StripeUnavailable(StripeError):
    """Stripe could not be reached, or kept answering 429/5xx after bounded retries."""


class AppDatabaseError(MonitorError):
    """The app's database could not be read or written."""


class MappingError(BadInput):
    """The mapping (APP_SCHEMA) does not fit the app's database: a missing column, a failing query."""


class StoreError(MonitorError):
    """The monitor's own store could not be opened or written."""
