"""Who the sign-in proxy names, decided from a request's headers alone (issue 14 point 8): the identity
header counts only on a request that carries TRUSTED_PROXY_SECRET, once, in TRUSTED_PROXY_SECRET_HEADER.
The headers are Streamlit's own `st.context.headers` type, built as Streamlit builds it from a request; the
browser tests in tests/test_signin.py send them through a real WebSocket. A header sent twice cannot be
sent by a browser (its header map has one value per name), so that case is here."""

from __future__ import annotations

import pytest
from streamlit.runtime.context import StreamlitHeaders

from monitor.config import load
from ui.context import proxy_identity

SECRET = "the-proxys-shared-secret-0123456789"
WHO = ("X-Forwarded-Email", "support@example.com")
RIGHT = ("X-Proxy-Secret", SECRET)


def proxy_config(tmp_path, **more: str):
    return load(
        {
            "STRIPE_API_KEY": "sk_test_proxyheaders",
            "APP_DATABASE_URL": f"sqlite:///{tmp_path / 'app.db'}",
            "MONITOR_DATABASE_URL": f"sqlite:///{tmp_path / 'monitor.db'}",
            "TRUSTED_PROXY_HEADER": "X-Forwarded-Email",
            "TRUSTED_PROXY_SECRET": SECRET,
            **more,
        },
        toml_path=tmp_path / "none.toml",
    )


@pytest.mark.parametrize(
    ("headers", "who", "why"),
    [
        ([WHO, RIGHT], "support@example.com", None),
        (
            [("x-forwarded-email", "support@example.com"), ("x-proxy-secret", SECRET)],
            "support@example.com",
            None,
        ),
        ([WHO], None, "the request carries no X-Proxy-Secret header"),
        ([WHO, ("X-Proxy-Secret", "")], None, "the request carries no X-Proxy-Secret header"),
        ([WHO, ("X-Proxy-Secret", "a-guess-of-the-same-length-0123456")], None, "is not the sign-in proxy's"),
        ([WHO, ("X-Proxy-Secret", SECRET[:-1])], None, "is not the sign-in proxy's"),
        ([WHO, ("X-Proxy-Secret", SECRET + "9")], None, "is not the sign-in proxy's"),
        ([WHO, ("X-Proxy-Secret", f" {SECRET} ")], None, "is not the sign-in proxy's"),
        ([WHO, ("X-Proxy-Secret", SECRET.upper())], None, "is not the sign-in proxy's"),
        ([WHO, ("X-Proxy-Secret", "sécrêt-ünïcode-is-never-a-crash")], None, "is not the sign-in proxy's"),
        ([WHO, ("X-Proxy-Secret", f"guess, {SECRET}")], None, "is not the sign-in proxy's"),
        ([WHO, ("X-Proxy-Secret", "guess"), RIGHT], None, "X-Proxy-Secret more than once"),
        ([WHO, RIGHT, RIGHT], None, "X-Proxy-Secret more than once"),
        ([RIGHT], None, "the request carries no X-Forwarded-Email header"),
        ([WHO, ("X-Forwarded-Email", "admin@example.com"), RIGHT], None, "X-Forwarded-Email more than once"),
    ],
    ids=[
        "header and secret",
        "any case of their names",
        "no secret",
        "an empty secret",
        "a wrong secret",
        "the secret less its last character",
        "the secret and one more",
        "the secret with spaces",
        "the secret in capitals",
        "a non-ASCII guess",
        "a list with the secret in it",
        "a guess and the secret",
        "the secret twice",
        "the secret without the identity",
        "two identities",
    ],
)
def test_the_identity_header_counts_only_with_the_proxys_secret_sent_once(tmp_path, headers, who, why):
    name, problem = proxy_identity(proxy_config(tmp_path), StreamlitHeaders(headers))
    assert name == who
    if why is None:
        assert problem is None
    else:
        assert why in problem
        assert SECRET not in problem and "guess" not in problem  # says why, never what was sent


def test_the_secret_is_read_from_the_header_trusted_proxy_secret_header_names(tmp_path):
    cfg = proxy_config(tmp_path, TRUSTED_PROXY_SECRET_HEADER="X-Monitor-Key")
    name, problem = proxy_identity(cfg, StreamlitHeaders([WHO, RIGHT]))
    assert name is None and "carries no X-Monitor-Key header" in problem
    name, problem = proxy_identity(cfg, StreamlitHeaders([WHO, ("X-Monitor-Key", SECRET)]))
    assert (name, problem) == ("support@example.com", None)
