"""`python -m jobs`: the command line of the scheduler process (jobs.process).

Settings come from the environment and `monitor.toml` (README.md); a bad one stops it with one line and
exit status 2, an unreachable store with one line and status 1. SIGTERM or SIGINT stop it cleanly: exit
status 0, no traceback. Every line it logs or prints is masked, the first ones included (`_Masking`).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence

from jobs.process import LEASE_S, RENEW_S, JobsProcess
from monitor import alerts, store
from monitor import config as config_module
from monitor.errors import MonitorError
from monitor.secrets import mask_secrets

log = logging.getLogger("jobs")


class _Masking(logging.Filter):
    """No secret in the log, whoever logs it (our lines, APScheduler's, a library's such as apprise's
    while the alert URLs are checked), from the first line on: its secrets are those of the settings as
    given until they are parsed, then the configuration's."""

    def __init__(self, secrets: tuple[str, ...]):
        super().__init__()
        self.secrets = secrets
        self._formatter = logging.Formatter()

    def mask(self, text: str) -> str:
        return mask_secrets(text, self.secrets)

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.mask(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.mask(record.exc_text)
        if record.stack_info:
            record.stack_info = self.mask(record.stack_info)
        return True


def setup_logging(verbose: bool) -> _Masking:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    masking = _Masking(config_module.secrets_as_given())
    handler.addFilter(masking)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    # Libraries (Alembic, the Stripe SDK) say only what is wrong; our own modules say what they do.
    root.setLevel(logging.DEBUG if verbose else logging.WARNING)
    for name in ("jobs", "monitor"):
        logging.getLogger(name).setLevel(logging.DEBUG if verbose else logging.INFO)
    # APScheduler's skipped and missed runs are said once, better, by JobsProcess; its errors still show.
    logging.getLogger("apscheduler").setLevel(logging.ERROR)
    return masking


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m jobs",
        description="The monitor's scheduler: sync + reconcile, probes, retention and alerts, on a timer. "
        "Settings come from the environment (see README.md); several processes may share one store, and "
        "one of them runs the jobs.",
    )
    p.add_argument("--lease-seconds", type=float, default=LEASE_S, help="how long a lease lasts (default 15)")
    p.add_argument("--renew-seconds", type=float, default=RENEW_S, help="how often it is renewed (default 5)")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug detail")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    masking = setup_logging(args.verbose)
    # Stopped while starting (opening the store may migrate it, in transactions): just leave, quietly.
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: sys.exit(0))
    if not 0 < args.renew_seconds < args.lease_seconds:
        print("error: --renew-seconds must be above 0 and below --lease-seconds", file=sys.stderr)
        return 2
    try:
        cfg = config_module.load()
        alerts.check_targets(cfg)
    except config_module.ConfigError as e:
        print(f"error: {masking.mask(str(e))}", file=sys.stderr)
        return 2
    masking.secrets = cfg.secrets
    try:
        engine = store.open_store(cfg.monitor_database_url)
    except MonitorError as e:
        print(f"error: {cfg.mask(str(e))}", file=sys.stderr)
        return 1
    process = JobsProcess(cfg, engine, lease_s=args.lease_seconds, renew_s=args.renew_seconds)
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: process.stop())
    if cfg.metrics_port is not None:
        from jobs import exporter

        try:
            exporter.serve(cfg.metrics_port, process.metrics_state)
            log.info("metrics: http://127.0.0.1:%d/metrics", cfg.metrics_port)
        except OSError as e:
            log.warning(
                "metrics: cannot listen on 127.0.0.1:%d (%s): this process serves none",
                cfg.metrics_port,
                e.strerror,
            )
    return process.run()
