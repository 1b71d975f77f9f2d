"""A small Django project used only by the tests: the incident's kind of app (`apps/payments`) and a
dj-stripe installation, migrated by Django itself into SQLite or PostgreSQL (see `harness.py`)."""
