"""Alembic environment for the monitor's store. Run through `monitor.store.migrate`, which passes the
connection in `config.attributes["connection"]`; a URL in `sqlalchemy.url` works too, for `alembic` by hand."""

from alembic import context
from sqlalchemy import create_engine

from monitor.store.models import Base

config = context.config
target_metadata = Base.metadata


def run() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"))
    with engine.begin() as conn:
        context.configure(connection=conn, target_metadata=target_metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()


run()
