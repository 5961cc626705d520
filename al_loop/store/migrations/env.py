"""Alembic's environment for the al-loop database.

al-loop passes an open connection (``config.attributes["connection"]``, inside the transaction and lock
that ``al_loop.store.schema.upgrade`` holds); the ``alembic`` command line of a developer gives none, and
the database is then ``-x url=...`` (or ``sqlalchemy.url`` in the ini file). The environment is not read here.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection, create_engine

from al_loop.store.tables import Base

config = context.config
target_metadata = Base.metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata,
                      render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
    with context.begin_transaction():
        context.run_migrations()


def _url() -> str:
    url = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise SystemExit("give the database as: alembic -x url=sqlite:///path/al-loop.db ...")
    return url


if context.is_offline_mode():
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()
elif (conn := config.attributes.get("connection")) is not None:
    _run(conn)
else:
    with create_engine(_url()).connect() as fresh:
        _run(fresh)
        fresh.commit()
