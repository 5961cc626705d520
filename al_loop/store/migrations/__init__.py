"""The Alembic environment of the al-loop database (``env.py``, ``versions/``), run by ``al_loop.store.schema``.

Shared by SQLite and PostgreSQL; SQLite ALTERs run in batch mode (``render_as_batch``). A new revision:
``alembic -c al_loop/store/migrations/alembic.ini revision --autogenerate -m "what"`` against a database at head,
then read and edit the generated file (see docs/architecture.md, State).
"""
