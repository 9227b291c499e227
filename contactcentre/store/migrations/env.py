"""Alembic environment: runs migrations on the engine that ``contactcentre.store.db.migrate`` passes in.

There is no ``alembic.ini`` and no URL here: the program decides which database, so ``contactcentre migrate``
and the server can never disagree about it.
"""

from __future__ import annotations

from alembic import context

from contactcentre.store.schema import metadata

engine = context.config.attributes["engine"]

with engine.connect() as connection:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead, so one migration serves both.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()
    connection.commit()
