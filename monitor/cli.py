"""`python -m monitor COMMAND`: the command line (DESIGN.md "Command line").

A user's mistake (a bad setting, a mapping that does not fit) is one line on stderr and exit status 2;
a failure of something outside (Stripe, a database) is one line and exit status 1. No traceback for
either; every secret the configuration holds is masked in what is printed, and control characters in
data (an e-mail from the app's database, a message from Stripe) are shown escaped, never obeyed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence

from monitor import config as config_module
from monitor import demo
from monitor.errors import MonitorError
from monitor.rules.money import format_amounts, format_money

# --- data made safe to print on a terminal ----------------------------------------------------------
# E-mails, hints and Stripe's messages come from the app's database and from Stripe, that is, from
# customers. A control character among them would be obeyed by the terminal: ESC starts a sequence that
# recolours the screen, moves the cursor or sets the window title, CR rewrites the line. Each is shown
# escaped instead, `\x1b` style, so the text reads as it is stored and nothing moves the cursor.

# Unicode's line separators and the controls that reorder text (bidi, "Trojan Source"): shown as \uXXXX.
_REORDERING = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
# C0 (tab and newline too: both move the cursor), DEL and C1 (U+009B is a one-character ESC [).
_UNSAFE = re.compile(f"[\x00-\x1f\x7f-\x9f{_REORDERING}]")
# What json.dumps(ensure_ascii=False) leaves raw: it escapes C0 itself, and its own newlines are layout.
_UNSAFE_IN_JSON = re.compile(f"[\x7f-\x9f{_REORDERING}]")


def _escaped(match: re.Match) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def printable(text: object) -> str:
    """`text` with every control character shown escaped (`\\x1b`, `\\x0d`, `\\u202e`)."""
    return _UNSAFE.sub(_escaped, str(text))


def printable_json(text: str) -> str:
    """JSON text from json.dumps with the characters it leaves raw escaped as `\\u…`: the same JSON."""
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


# --- the commands ----------------------------------------------------------------------------------


def _say(text: str, cfg=None, file=None) -> None:
    """Print `text`: the configuration's secrets masked, then every control character escaped (a line's
    own layout is ours; what is in it may be anyone's)."""
    print(printable(cfg.mask(text) if cfg is not None else text), file=file)


def _money(amount: int | None, currency: str | None) -> str:
    return format_money(amount, currency) if amount is not None and currency else ""


def _progress_printer(stream):
    if not stream.isatty():
        return None

    def show(resource: str, objects: int, pages: int) -> None:
        stream.write(f"\r  {resource}: {objects:,} objects, {pages:,} pages so far\033[K")
        stream.flush()

    return show


def cmd_sync(args, cfg) -> int:
    from monitor import pipeline, store
    from monitor.stripe_api.sync import SyncIncomplete

    engine = store.open_store(cfg.monitor_database_url)
    progress = _progress_printer(sys.stderr)
    try:
        result = pipeline.run_sync(cfg, engine, full=args.full, progress=progress)
    except SyncIncomplete as e:  # what did come in, then one line per resource that did not
        _print_synced(cfg, e.result, progress)
        for name, error in e.failed.items():
            _say(f"  FAILED {name}: {error}", cfg, sys.stderr)
        raise
    _print_synced(cfg, result, progress)
    return 0


def _print_synced(cfg, result, progress) -> None:
    if progress:
        sys.stderr.write("\r\033[K")
    parts = ", ".join(f"{name} {n:,}" for name, n in result.objects.items())
    mode = " (demo: the built-in Stripe emulator)" if demo.active(cfg) else ""
    _say(
        f"synced {result.total:,} objects in {result.requests:,} requests, {result.seconds:.1f} s{mode}: {parts}"
    )


def cmd_reconcile(args, cfg) -> int:
    from monitor import pipeline, store

    engine = store.open_store(cfg.monitor_database_url)
    report = pipeline.run_reconcile(cfg, engine)
    if args.json:
        # One compact write: `indent` switches json to its pure-Python encoder, and json.dump streams
        # thousands of tiny writes; both cost seconds on a large report. Pipe through `jq` to read it.
        sys.stdout.write(printable_json(json.dumps(report.to_json(), ensure_ascii=False)) + "\n")
        return 0
    s = report.summary
    risk = format_amounts(s["amount_at_risk"], none="none")
    _say(
        f"{s['payments']:,} payments, {s['matched']:,} matched, parity {s['parity_pct']}%, "
        f"{len(report.findings):,} findings; paid without access: {risk}"
    )
    for line in _snapshot_lines(s.get("snapshot") or {}):
        _say(f"  {line}", cfg)
    for f in report.findings:
        # Each field escaped before it is padded, so the columns stay aligned.
        what = printable(f.payment_id or ", ".join(f"row {i}" for i in f.subscription_ids) or "")
        email = printable(f.customer_email or "")
        _say(
            f"  {printable(f.severity).upper():8} {printable(f.kind):26} {what:28} {email:30} "
            f"{_money(f.amount, f.currency):>12}  [{f.status}]",
            cfg,
        )
        if f.hint:
            _say(f"           {f.hint}", cfg)
    return 0


def _snapshot_lines(snap: dict) -> list[str]:
    """What an incomplete snapshot lacks and what was therefore not judged, a line each."""
    lines = []
    for gap in snap.get("missing") or []:
        lines.append(
            f"INCOMPLETE: {gap['resource']} never synced completely: {gap.get('error') or 'not synced yet'}"
        )
    for gap in snap.get("failing") or []:
        lines.append(f"STALE: {gap['resource']} failed in its latest sync: {gap.get('error')}")
    for kind, why in (snap.get("held_back_reasons") or {}).items():
        lines.append(f"NOT JUDGED: {kind}: {why}")
    return lines


def cmd_check(args, cfg) -> int:
    from monitor import metrics, pipeline

    report = pipeline.run_check(cfg)
    if args.prometheus:
        try:
            metrics.write_textfile(args.prometheus, report)
        except OSError as e:
            report.notes.append(f"cannot write {args.prometheus}: {e.strerror}")
    if args.json:
        print(printable_json(cfg.mask(json.dumps(report.to_json(), indent=1, ensure_ascii=False))))
        return report.exit_status
    _say(f"{report.status}: {_check_summary(report)}", cfg)
    for c in report.components:
        latency = f"{c.latency_ms:.0f} ms" if c.latency_ms is not None else ""
        _say(f"  {c.status.upper():9} {printable(c.name):22} {latency:>8}  {c.detail}", cfg)
    for note in report.notes:
        _say(f"  note: {note}", cfg)
    return report.exit_status


def _check_summary(report) -> str:
    down = [c.name for c in report.components if c.status == "down"]
    parts = [f"{', '.join(down)} down"] if down else []
    if report.findings:
        parts.append(", ".join(f"{n} {kind}" for kind, n in sorted(report.findings.items())))
    risk = format_amounts(report.amount_at_risk)
    if risk:
        parts.append(f"paid without access: {risk}")
    return "; ".join(parts) or "every component up, no open findings"


def cmd_repair(args, cfg) -> int:
    from monitor import repair

    result = repair.activate(
        cfg, args.payment_id, args.operator, strategy=args.strategy, dry_run=args.dry_run
    )
    label = repair.OUTCOMES[result.outcome].label
    _say(f"{label}: {result.payment_id}: {result.reason}", cfg)
    if result.plan and result.plan.get("row"):
        _say(f"  {result.plan['action']}: " + json.dumps(result.plan["row"], default=str), cfg)
    _say(
        f"  recorded in the repair ledger as #{result.ledger_id} (operator {result.operator}, role {result.role})",
        cfg,
    )
    return result.exit_status


def cmd_incidents(args, cfg) -> int:
    from monitor import pipeline, store
    from monitor.clock import now_utc
    from monitor.errors import AppDatabaseError
    from monitor.rules.timefmt import iso
    from monitor.views.incidents import open_incidents

    engine = store.open_store(cfg.monitor_database_url)
    now = now_utc()
    try:
        app = pipeline.open_app_database(cfg)
    except AppDatabaseError as e:  # incidents are still found; only the app-log causes need the app
        _say(f"note: {e}; incidents are grouped without the app's webhook log", cfg, sys.stderr)
        app = None
    try:
        incidents = open_incidents(engine, app, cfg, now=now)
    finally:
        if app is not None:
            app.dispose()
        engine.dispose()
    if args.json:
        out = {"generated_at": iso(now), "incidents": [i.to_json() for i in incidents]}
        sys.stdout.write(printable_json(cfg.mask(json.dumps(out, ensure_ascii=False))) + "\n")
        return 0
    if not incidents:
        _say("no open incidents")
        return 0
    _say(f"{len(incidents)} open incident{'s' if len(incidents) != 1 else ''}:")
    _say(f"  {'ID':16} {'CAUSE':58} {'CUSTOMERS':>9} {'AT RISK':>14} {'RECOVERABLE':>11}")
    for i in incidents:
        risk = format_amounts(i.amount_at_risk, none="-")
        title = printable(i.cause.title(now=now))
        _say(f"  {i.id:16} {title[:58]:58} {i.customers:>9} {risk:>14} {i.recoverable:>11}", cfg)
        if i.cause.detail:
            _say(f"  {'':16} {i.cause.detail}", cfg)
    _say("recover one with: python -m monitor recover INCIDENT_ID --operator WHO [--dry-run]")
    return 0


def cmd_recover(args, cfg) -> int:
    from monitor import actions, repair

    def show(done: int, total: int, result) -> None:
        label = repair.OUTCOMES[result.outcome].label
        _say(f"[{done}/{total}] {result.payment_id} {label}: {result.reason}", cfg)
        sys.stdout.flush()

    recovery = actions.recover_incident(
        cfg, args.incident_id, args.operator, strategy=args.strategy, dry_run=args.dry_run, progress=show
    )
    incident = recovery.incident
    what = "dry run of recovering" if args.dry_run else "recovered"
    if incident.status != "open":
        _say(f"incident {incident.id} is {incident.status}: nothing to recover", cfg)
        return 0
    if not recovery.results:
        _say(f"incident {incident.id} has no payment to recover (nothing paid is without access)", cfg)
        return 0
    counts = ", ".join(f"{n} {step.replace('_', ' ')}" for step, n in recovery.counts.items())
    money = format_amounts(recovery.amount)
    _say(f"{what} incident {incident.id}: {counts}" + (f" ({money})" if money else ""), cfg)
    if recovery.closed:
        _say(f"  closed {len(recovery.closed)} webhook finding(s) of the customers now active", cfg)
    if recovery.refused:
        _say(f"  {len(recovery.refused)} not recovered:", cfg)
        for r in recovery.refused:
            _say(f"    {r.payment_id}: {repair.OUTCOMES[r.outcome].label}: {r.reason}", cfg)
    _say(f"  every repair is in the repair ledger (operator {recovery.operator}, role {recovery.role})", cfg)
    return recovery.exit_status


def cmd_mapping_check(args, cfg) -> int:
    from monitor import pipeline

    app = pipeline.open_app_database(cfg)
    mapping = app.mapping
    _say(f"mapping {mapping.name}: active statuses {', '.join(mapping.active_statuses)}", cfg)
    subs = app.read_subscriptions()
    active = subs["status"].map(lambda s: isinstance(s, str) and s in mapping.active_statuses).sum()
    print(f"[subscriptions] ok: {len(subs):,} rows, {active:,} in an active status")
    if not subs.empty:
        sample = subs.head(5).map(lambda v: printable(v) if isinstance(v, str) else v)
        for line in sample.to_string(index=False, max_colwidth=28).splitlines():
            _say(line, cfg)
    log = app.read_webhook_log()
    if mapping.webhook_log_query is None:
        print("[webhook_log] not mapped: webhook_failed and webhook_missing are not judged")
    elif log is None:
        print("[webhook_log] mapped but its table is absent (optional): no log")
    else:
        print(f"[webhook_log] ok: {len(log):,} rows")
    if not mapping.repair:
        print(
            "[repair] no templates: the db strategy cannot write the app's rows; repair with "
            "--strategy webhook (re-sends the Stripe event to EXPECTED_WEBHOOK_URL)"
        )
    for name in ("activate", "create") if mapping.repair else ():
        state = "present" if mapping.repair.get(name) else "absent (the db repair strategy cannot use it)"
        print(f"[repair] {name}: {state}")
    app.dispose()
    return 0


def cmd_emulator(args, _cfg) -> int:
    from monitor.emulator import server

    objects: list[dict] = []
    if args.fixtures:
        try:
            objects = server.load_fixtures(args.fixtures)
        except ValueError as e:
            raise config_module.ConfigError(f"--fixtures {args.fixtures}: {e}") from None
    scenario = args.scenario or ("empty" if args.fixtures else "demo")
    if scenario == "demo":
        url = os.environ.get("APP_DATABASE_URL") or config_module.DEMO_APP_DATABASE_URL
        demo_scenario = demo.scenario_at(url)
        objects = demo_scenario.objects + objects
        print(
            f"demo scenario anchored at {demo_scenario.anchor:%Y-%m-%d %H:%M} UTC; "
            f"app database {config_module.mask_url(url)}"
        )
    try:
        server.serve_forever(
            objects,
            port=args.port,
            api_key=args.api_key,
            latency_ms=args.latency_ms,
            rate_limit=args.rate_limit,
            error_rate=args.error_rate,
            deny=args.deny,
        )
    except ValueError as e:
        raise config_module.ConfigError(f"emulator: {e}") from None
    except OSError as e:
        raise config_module.ConfigError(
            f"emulator: cannot listen on port {args.port}: {e.strerror}"
        ) from None
    return 0


def _number(minimum: float, maximum: float | None = None, *, above: bool = False):
    """An argparse type: a number >= minimum (> minimum with `above`), <= maximum."""

    def parse(value: str) -> float:
        try:
            number = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{value!r} is not a number") from None
        too_low = number <= minimum if above else number < minimum
        if too_low or (maximum is not None and number > maximum):
            bound = f"above {minimum:g}" if above else f"at least {minimum:g}"
            raise argparse.ArgumentTypeError(
                f"{value!r} is out of range (expected {bound}{f' and at most {maximum:g}' if maximum else ''})"
            )
        return number

    return parse


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m monitor",
        description="Payment Parity Monitor: Stripe payments against app subscriptions.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "sync", help="pull Stripe objects into the store (incremental; resumes after a failure)"
    )
    p.add_argument("--full", action="store_true", help="fetch everything again instead of only what is new")
    p.set_defaults(func=cmd_sync)

    p = sub.add_parser("reconcile", help="compare payments with subscription rows; print the findings")
    p.add_argument("--json", action="store_true", help="print DESIGN.md's JSON object")
    p.set_defaults(func=cmd_reconcile)

    p = sub.add_parser("check", help="probe every component, read open findings: one Nagios verdict")
    p.add_argument("--json", action="store_true", help="print DESIGN.md's JSON object")
    p.add_argument("--prometheus", metavar="FILE", help="also write the metrics in Prometheus' text format")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser(
        "repair", help="activate the subscription of a paid payment, once, re-checked at Stripe"
    )
    p.add_argument(
        "payment_id", metavar="PAYMENT_ID", help="the Checkout Session (cs_…), invoice or PaymentIntent id"
    )
    p.add_argument("--operator", required=True, help="who is doing this (checked against OPERATOR_ROLES)")
    p.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    p.add_argument(
        "--strategy", choices=("db", "webhook"), default="db", help="write the row (db) or re-send the event"
    )
    p.set_defaults(func=cmd_repair)

    p = sub.add_parser("incidents", help="the open findings grouped by cause: one incident per outage, …")
    p.add_argument("--json", action="store_true", help="print DESIGN.md's JSON object")
    p.set_defaults(func=cmd_incidents)

    p = sub.add_parser(
        "recover", help="activate every recoverable payment of an incident, once each, re-checked at Stripe"
    )
    p.add_argument("incident_id", metavar="INCIDENT_ID", help="an incident's id (inc_…) from `incidents`")
    p.add_argument("--operator", required=True, help="who is doing this (checked against OPERATOR_ROLES)")
    p.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    p.add_argument(
        "--strategy",
        choices=("db", "webhook"),
        default="db",
        help="write the rows (db) or re-send the events",
    )
    p.set_defaults(func=cmd_recover)

    p = sub.add_parser("mapping", help="check the APP_SCHEMA mapping against the app's database")
    mapping_sub = p.add_subparsers(dest="mapping_command", required=True, metavar="SUBCOMMAND")
    q = mapping_sub.add_parser("check", help="run the mapping's queries once and show a sample")
    q.set_defaults(func=cmd_mapping_check)

    p = sub.add_parser("emulator", help="run the Stripe emulator in the foreground")
    p.add_argument("--port", type=int, default=12111)
    p.add_argument("--fixtures", help='a JSON file {"objects": [Stripe objects]}')
    p.add_argument("--scenario", choices=("demo", "empty"), help="demo (default without --fixtures) or empty")
    p.add_argument("--api-key", help="accept only this key (default: any sk_test_… or rk_test_… key)")
    p.add_argument("--latency-ms", type=_number(0), default=0.0, help="delay every answer")
    p.add_argument("--rate-limit", type=_number(0, above=True), default=None, help="requests/s before 429")
    p.add_argument(
        "--error-rate", type=_number(0, 1), default=0.0, help="share of requests answered 500 (0-1)"
    )
    p.add_argument(
        "--deny",
        action="append",
        default=[],
        metavar="PATH",
        help="answer GET on PATH (e.g. /v1/checkout/sessions) and its objects 403, as for a restricted key "
        "without that permission (repeatable)",
    )
    p.set_defaults(func=cmd_emulator, needs_config=False)
    return parser


def _masked(error: Exception, cfg) -> str:
    # Without a configuration (it failed to load), the secrets of the settings as given.
    secrets = cfg.secrets if cfg is not None else config_module.secrets_as_given()
    return config_module.mask_secrets(str(error), secrets)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = None
    try:
        if getattr(args, "needs_config", True):
            cfg = config_module.load()
        return args.func(args, cfg)
    except config_module.ConfigError as e:
        _say(f"error: {_masked(e, cfg)}", file=sys.stderr)
        return 2
    except MonitorError as e:
        _say(f"error: {_masked(e, cfg)}", file=sys.stderr)
        return e.exit_status
    except KeyboardInterrupt:
        print("interrupted; everything saved so far stays saved", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # The reader went away (`… | head`): say nothing more, and keep Python from complaining at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
