"""Alembic environment: runs on the connection the app hands over, or on the app's engine."""

from alembic import context

from todo.models import created_on, db

config = context.config


def run_on(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=db.metadata,
        # SQLite alters tables by copying them; batch mode does that portably.
        render_as_batch=True,
        compare_type=True,
        include_object=created_on(connection.dialect.name),
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_on(connection)
else:
    from flask import current_app

    with current_app.extensions["migrate"].db.engine.connect() as connection:
        run_on(connection)
        connection.commit()
