"""Alembic environment of the trace store.

Migrations run only through :func:`store.engine.migrate`, which opens the transaction
(and takes the lock that serialises concurrent upgrades) and hands its connection in
``config.attributes["connection"]``. There is no alembic.ini and no offline mode.
"""

from alembic import context

from ttc.store.schema import Base

connection = context.config.attributes.get("connection")
if connection is None:
    raise RuntimeError(
        "store migrations need a connection in config.attributes['connection']; "
        "use store.engine.migrate(engine)"
    )

context.configure(
    connection=connection,
    target_metadata=Base.metadata,
    # SQLite cannot ALTER most things; batch mode lets later migrations recreate tables.
    render_as_batch=True,
    compare_type=True,
)
with context.begin_transaction():
    context.run_migrations()
