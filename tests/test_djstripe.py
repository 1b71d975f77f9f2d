"""The `djstripe` preset against a real dj-stripe database: dj-stripe's own migrations (run by Django in a
subprocess, see tests/django_app/harness.py) into SQLite and PostgreSQL, rows written into the migrated
tables as dj-stripe writes them, the matching Stripe objects served by the emulator, and the monitor's
command line with APP_SCHEMA=djstripe, as a team with dj-stripe runs it."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from monitor.emulator import server
from monitor.emulator.shapes import example, examples, paid_charge, paid_intent
from tests.django_app import harness
from tests.stripe_cast import REDIS_ERROR, Account, findings_of

# The first run on a machine also runs dj-stripe's migrations (1-3 minutes, see harness.py).
pytestmark = pytest.mark.timeout(900)

KEY = "sk_test_djstripe"
DAY = 86400
API_VERSION = "2025-03-31.basil"


@pytest.fixture(scope="session")
def djstripe_cache(postgres_server):
    """The folder holding the databases dj-stripe's migrations made (migrated now if not kept yet)."""
    scratch: list[str] = []

    def scratch_database() -> str:
        scratch.append(postgres_server.create_database())
        return postgres_server.url(scratch[-1])

    try:
        return harness.ensure_djstripe_cache(scratch_database)
    except harness.MigrationFailed as e:
        pytest.fail(str(e), pytrace=False)
    finally:
        for name in scratch:
            postgres_server.drop_database(name)


# --- the account: Stripe's side (served by the emulator) and dj-stripe's rows ------------------------------


@dataclass
class DjStripeAccount(Account):
    customers: list[dict] = field(default_factory=list)
    subscriptions: list[dict] = field(default_factory=list)
    events: list[dict] = field(default_factory=list)
    triggers: list[dict] = field(default_factory=list)

    def subscribe(self, email: str, periods: list[tuple[int, int]], *, synced_end: int | None = None) -> dict:
        """A subscription paid by one invoice per (start, end) period. dj-stripe has synced the customer;
        the subscription row is added by `synced` (with its period end as of `synced_end`, if given)."""
        first = periods[0][0]
        cus = self.customer(email, first - 60)
        self.customers.append({"id": cus, "email": email, "created": first - 60, "data": self.objects[-1]})
        sub_id, item_id = self.id("sub"), self.id("si")
        item = json.loads(json.dumps(examples()["subscription"]["items"]["data"][0]))
        item["price"].update(currency="usd", unit_amount=14900, unit_amount_decimal="14900")
        item.update(
            id=item_id,
            subscription=sub_id,
            created=first,
            current_period_start=periods[-1][0],
            current_period_end=periods[-1][1],
        )
        sub = example(
            "subscription",
            id=sub_id,
            customer=cus,
            created=first,
            start_date=first,
            status="active",
            currency="usd",
            cancel_at=None,
            canceled_at=None,
            ended_at=None,
            items={"object": "list", "data": [item], "has_more": False, "url": "/v1/subscription_items"},
            livemode=False,
        )
        self.objects.append(sub)
        invoices = []
        for n, (start, end) in enumerate(periods):
            invoices.append(self._invoice(cus, email, sub_id, start, end, first=n == 0))
        return {"cus": cus, "sub": sub, "invoices": invoices, "email": email, "synced_end": synced_end}

    def _invoice(self, cus: str, email: str, sub_id: str, start: int, end: int, *, first: bool) -> dict:
        inv, pi, ch, evt = self.id("in"), self.id("pi"), self.id("ch"), self.id("evt")
        paid_at = start + 60
        self.objects.append(paid_intent(14900, ch, id=pi, customer=cus, created=paid_at - 2))
        charge = paid_charge(14900, pi, id=ch, customer=cus, created=paid_at - 2)
        self.objects.append(charge)
        line = json.loads(json.dumps(examples()["invoice"]["lines"]["data"][0]))
        line.update(amount=14900, currency="usd", invoice=inv, period={"start": start, "end": end})
        invoice = example(
            "invoice",
            id=inv,
            status="paid",
            amount_due=14900,
            amount_paid=14900,
            amount_remaining=0,
            currency="usd",
            customer=cus,
            customer_email=email,
            billing_reason="subscription_create" if first else "subscription_cycle",
            created=start,
            # Stripe's own period of a subscription invoice is the one before the period billed.
            period_start=start,
            period_end=start,
            lines={"object": "list", "data": [line], "has_more": False, "url": f"/v1/invoices/{inv}/lines"},
            parent={
                "type": "subscription_details",
                "quote_details": None,
                "subscription_details": {"subscription": sub_id, "metadata": {}},
            },
            subscription=None,
            payments={
                "object": "list",
                "data": [
                    {
                        "object": "invoice_payment",
                        "status": "paid",
                        "payment": {"type": "payment_intent", "payment_intent": pi},
                    }
                ],
                "has_more": False,
                "url": "/v1/invoice_payments",
            },
            status_transitions={
                "finalized_at": start,
                "marked_uncollectible_at": None,
                "paid_at": paid_at,
                "voided_at": None,
            },
            livemode=False,
        )
        self.objects.append(invoice)
        event = example(
            "event",
            id=evt,
            type="invoice.paid",
            api_version=API_VERSION,
            created=paid_at + 2,
            data={"object": invoice},
            pending_webhooks=0,
            livemode=False,
        )
        self.objects.append(event)
        return {"id": inv, "pi": pi, "charge": charge, "event": event}

    def synced(self, s: dict) -> None:
        """dj-stripe's row of the subscription: the object as Stripe returned it, period end as synced."""
        data = json.loads(json.dumps(s["sub"]))
        if s["synced_end"] is not None:
            data["items"]["data"][0]["current_period_end"] = s["synced_end"]
        self.subscriptions.append(
            {"id": data["id"], "customer": s["cus"], "created": data["created"], "data": data}
        )

    def refund(self, invoice: dict) -> None:
        charge = invoice["charge"]
        charge.update(amount_refunded=14900, refunded=True)
        super().refund(invoice["pi"], charge["id"], 14900, charge["created"] + 3600)

    def delivered(self, invoice: dict, *, error: str | None = None) -> None:
        """dj-stripe's WebhookEventTrigger for the invoice's event: processed (and its Event stored), or
        failed with `error` (then dj-stripe stores no Event, and the trigger links none)."""
        event = invoice["event"]
        if error is None:
            self.events.append(event)
        self.triggers.append({"event": event, "error": error})


def build() -> tuple[DjStripeAccount, set[tuple[str, str]]]:
    now = int(time.time())
    a = DjStripeAccount(now)
    expect = set()
    # paid: an active subscription for a paid invoice, its webhook processed: nothing to say.
    paid = a.subscribe("alice@example.com", [(now - 2 * DAY, now + 28 * DAY)])
    a.synced(paid)
    a.delivered(paid["invoices"][0])
    # missing: a paid invoice whose subscription dj-stripe never stored; the webhook failed on Redis.
    missing = a.subscribe("bob@example.com", [(now - DAY, now + 29 * DAY)])
    a.delivered(missing["invoices"][0], error=REDIS_ERROR)
    expect |= {
        ("paid_without_subscription", missing["invoices"][0]["id"]),
        ("webhook_failed", missing["invoices"][0]["event"]["id"]),
    }
    # refunded: the invoice was refunded in full, dj-stripe still has the subscription active.
    refunded = a.subscribe("carol@example.com", [(now - 3 * DAY, now + 27 * DAY)])
    a.refund(refunded["invoices"][0])
    a.synced(refunded)
    expect.add(("refunded_but_active", refunded["invoices"][0]["id"]))
    # renewed: the renewal was paid, but dj-stripe's copy still ends with the first period.
    start = now - 40 * DAY
    renewed = a.subscribe(
        "dave@example.com",
        [(start, start + 30 * DAY), (start + 30 * DAY, start + 60 * DAY)],
        synced_end=start + 30 * DAY,
    )
    a.synced(renewed)
    expect.add(("period_not_extended", renewed["invoices"][1]["id"]))
    return a, expect


# --- writing dj-stripe's tables ----------------------------------------------------------------------------


def write_djstripe(url: str, a: DjStripeAccount) -> None:
    """Rows in the migrated dj-stripe tables, with the values dj-stripe stores (times as Django keeps them:
    naive UTC text on SQLite, timestamptz on PostgreSQL)."""
    engine = create_engine(url)
    sqlite = engine.dialect.name == "sqlite"

    def at(ts: int):
        moment = datetime.fromtimestamp(ts, UTC)
        return moment.strftime("%Y-%m-%d %H:%M:%S.%f") if sqlite else moment

    base = "djstripe_created, djstripe_updated, stripe_data, id, livemode, created, metadata"
    values = ":now, :now, :data, :id, false, :created, '{}'"
    now = at(a.now)
    with engine.begin() as conn:
        for c in a.customers:
            conn.execute(
                text(f"INSERT INTO djstripe_customer ({base}, email) VALUES ({values}, :email)"),
                {
                    "now": now,
                    "data": json.dumps(c["data"]),
                    "id": c["id"],
                    "created": at(c["created"]),
                    "email": c["email"],
                },
            )
        for s in a.subscriptions:
            conn.execute(
                text(f"INSERT INTO djstripe_subscription ({base}, customer_id) VALUES ({values}, :customer)"),
                {
                    "now": now,
                    "data": json.dumps(s["data"]),
                    "id": s["id"],
                    "created": at(s["created"]),
                    "customer": s["customer"],
                },
            )
        for e in a.events:
            conn.execute(
                text(
                    f"INSERT INTO djstripe_event ({base}, api_version, data, request_id, idempotency_key, type) "
                    f"VALUES ({values}, :api_version, :object, '', '', :type)"
                ),
                {
                    "now": now,
                    "data": json.dumps(e),
                    "id": e["id"],
                    "created": at(e["created"]),
                    "api_version": e["api_version"],
                    "object": json.dumps(e["data"]),
                    "type": e["type"],
                },
            )
        for t in a.triggers:
            event = t["event"]
            # The body as Stripe sends it: the event's JSON, "id" and "object" first, indented by two.
            body = json.dumps({"id": event["id"], "object": "event", **event}, indent=2)
            conn.execute(
                text(
                    "INSERT INTO djstripe_webhookeventtrigger (remote_ip, headers, body, valid, processed, "
                    "exception, traceback, djstripe_version, created, updated, event_id) VALUES ('127.0.0.1', "
                    "'{}', :body, true, :processed, :exception, :traceback, '2.10.3', :received, :received, :event)"
                ),
                {
                    "body": body,
                    "processed": t["error"] is None,
                    "exception": t["error"] or "",
                    "traceback": f"Traceback (most recent call last):\n  ...\n{t['error']}"
                    if t["error"]
                    else "",
                    "received": at(event["created"] + 1),
                    "event": event["id"] if t["error"] is None else None,
                },
            )
    engine.dispose()


def snapshot(url: str) -> dict[str, list]:
    """Everything in dj-stripe's tables the monitor reads, to show it wrote nothing."""
    engine = create_engine(url)
    with engine.connect() as conn:
        out = {
            table: [tuple(r) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY 1, 2"))]
            for table in (
                "djstripe_customer",
                "djstripe_subscription",
                "djstripe_event",
                "djstripe_webhookeventtrigger",
            )
        }
    engine.dispose()
    return out


# --- the tests ---------------------------------------------------------------------------------------------


def reconcile_with_djstripe(cli_main, app_url: str, a: DjStripeAccount, expect: set, tmp_path: Path) -> dict:
    with server.start(a.objects, api_key=KEY) as emulator:
        env = {
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": emulator.base_url,
            "APP_DATABASE_URL": app_url,
            "APP_SCHEMA": "djstripe",
        }
        check = cli_main(["mapping", "check"], env)
        assert check.returncode == 0, check.stderr
        assert "[subscriptions] ok: 3 rows, 3 in an active status" in check.stdout
        assert "[webhook_log] ok: 2 rows" in check.stdout
        assert "[repair] no templates" in check.stdout and "--strategy webhook" in check.stdout
        synced = cli_main(["sync"], env)
        assert synced.returncode == 0, synced.stderr
        run = cli_main(["reconcile", "--json"], env)
        assert run.returncode == 0, run.stderr
    report = json.loads(run.stdout)
    assert findings_of(report) == expect
    return report


def test_the_djstripe_preset_on_sqlite_migrated_by_djstripe(cli_main, djstripe_cache, tmp_path):
    app_url = harness.djstripe_sqlite(djstripe_cache, tmp_path / "djstripe.sqlite3")
    a, expect = build()
    write_djstripe(app_url, a)
    report = reconcile_with_djstripe(cli_main, app_url, a, expect, tmp_path)
    failed = next(f for f in report["findings"] if f["kind"] == "webhook_failed")
    assert REDIS_ERROR in failed["hint"]
    missing = next(f for f in report["findings"] if f["kind"] == "paid_without_subscription")
    assert (missing["customer_email"], missing["amount"], missing["currency"]) == (
        "bob@example.com",
        14900,
        "usd",
    )


@pytest.mark.postgres
def test_the_djstripe_preset_on_postgresql_migrated_by_djstripe(
    cli_main, djstripe_cache, postgres_url, tmp_path
):
    app_url = harness.djstripe_postgres(djstripe_cache, postgres_url)
    a, expect = build()
    write_djstripe(app_url, a)
    reconcile_with_djstripe(cli_main, app_url, a, expect, tmp_path)


def test_the_db_repair_strategy_refuses_and_never_writes_djstripes_tables(cli_main, djstripe_cache, tmp_path):
    app_url = harness.djstripe_sqlite(djstripe_cache, tmp_path / "djstripe.sqlite3")
    a, _ = build()
    write_djstripe(app_url, a)
    missing = next(
        s for s in a.objects if s.get("object") == "invoice" and s["customer_email"] == "bob@example.com"
    )
    before = snapshot(app_url)
    with server.start(a.objects, api_key=KEY) as emulator:
        env = {
            "STRIPE_API_KEY": KEY,
            "STRIPE_API_BASE": emulator.base_url,
            "APP_DATABASE_URL": app_url,
            "APP_SCHEMA": "djstripe",
            "OPERATOR_ROLES": "ann=support",
        }
        assert cli_main(["sync"], env).returncode == 0
        run = cli_main(["repair", missing["id"], "--operator", "ann", "--strategy", "db"], env)
    # Refused as bad input before Stripe is asked or anything is claimed.
    assert run.returncode == 2, run.stdout + run.stderr
    assert "has no [repair] SQL" in run.stderr
    assert "--strategy webhook" in run.stderr
    assert "Traceback" not in run.stdout + run.stderr
    assert snapshot(app_url) == before
