"""Alembic environment. adminlink runs migrations itself (``adminlink migrate``, and at
``adminlink serve``), handing a live connection in ``config.attributes``."""

from alembic import context

from service.adapters.orm import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",  # SQLite alters tables by copying them
)
with context.begin_transaction():
    context.run_migrations()
