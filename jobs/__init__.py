"""The scheduler process, `python -m jobs`: one APScheduler 3.x BlockingScheduler that runs the monitor's
scheduled jobs (monitor.scheduled) while it holds the store's lease (monitor.store.leases). See
docs/operations.md."""
