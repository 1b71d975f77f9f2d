"""The benchmark: `make bench`, or `python -m benchmarks [options]`.

One run, one table, our way side by side with the naive way, one module per measurement:

1. backfill: `monitor.stripe_api.sync.sync` against a naive sequential `auto_paging_iter` loop of the real
   stripe SDK over the same N Checkout Sessions, served by the emulator in a subprocess (so it does not
   share our GIL) with injected latency. Every request of ours is timed where it starts
   (`StripeSource._request`), so the table shows the most requests that started in any one second against
   STRIPE_RATE_LIMIT.
2. rate_bound: the same sync against an emulator with no latency and our limiter at 20 requests/s.
3. incremental: the requests of a sync with nothing new, and with 1,000 new sessions.
4. reconciliation, reconciliation_large: read both sides in bulk and reconcile 100,000 payments (a SQLite
   store and app database), and 1,000,000 payments against 1,000,000 rows built in memory, each in a child
   process (reconcile_child) whose peak memory is read from the kernel; against a naive reconciliation
   with one app-database query per payment.
5. dashboard: the dashboard's reads (monitor.views) with 100,000 findings in the store, best of 3.
6. Backfill and dashboard again with the store on PostgreSQL (postgres).

The table goes to stdout and to BENCHMARKS.md (--out) with the machine it ran on (report); progress goes
to stderr. Every process it starts (emulators, children, PostgreSQL) is stopped when it ends, also on
Ctrl-C, SIGTERM or an error (runner). A developer tool run from a checkout: it imports `monitor` and
`testbed`, never the tests.
"""
