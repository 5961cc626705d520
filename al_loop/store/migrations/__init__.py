"""The Alembic environment of the al-loop database (``env.py``, ``versions/``), run by ``al_loop.store.schema``.

Shared by SQLite and PostgreSQL; SQLite ALTERs run in batch mode (``render_as_batch``). A new revision, against a
scratch database at head (``alembic.ini`` is for these developer commands only)::

    alembic -c al_loop/store/migrations/alembic.ini -x url=sqlite:///scratch.db upgrade head
    alembic -c al_loop/store/migrations/alembic.ini -x url=sqlite:///scratch.db revision --autogenerate -m "what"

then read and edit the generated file, and set ``al_loop.store.schema.HEAD`` to its revision
(docs/architecture.md, State).
"""
