"""A Todo REST API: `create_app()` builds it."""

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_migrate import Migrate

from todo import auth, cli, database, errors, headers, limits
from todo.config import configure
from todo.database import MIGRATIONS
from todo.json import OrjsonProvider
from todo.lean import LeanFlask
from todo.views.accounts import accounts_api
from todo.views.docs import docs
from todo.views.index import index
from todo.views.routes import TodoIdConverter, api

migrate = Migrate(directory=str(MIGRATIONS))


def create_app(config_overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, JSON, database, routing, limits, routes, errors, headers, CLI,
    schema."""
    # No static folder: every path outside the API is an unknown path, answered as a problem.
    app = LeanFlask(__name__, instance_relative_config=True, static_folder=None)
    configure(app, config_overrides)
    app.json = OrjsonProvider(app)
    database.init_app(app)
    migrate.init_app(app, database.db)
    app.url_map.converters["todo_id"] = TodoIdConverter
    # A doubled slash is an unknown path (a 404 problem), not an HTML redirect to the real one.
    app.url_map.merge_slashes = False
    limits.init_app(app)
    app.register_blueprint(api, url_prefix="/api/v1")
    if app.config["AUTH"] == "token":
        app.register_blueprint(accounts_api, url_prefix="/api/v1")
    app.register_blueprint(docs, url_prefix="/api/v1")
    app.register_blueprint(index)
    auth.init_app(app)
    errors.init_app(app)
    headers.init_app(app)
    cli.init_app(app)
    # A worker that started before its database answers 503 on the API until the schema is
    # ready; only then is a token looked up (a 503, never a 401, while the database is away).
    database.prepare_schema(app, auth.API_BLUEPRINTS)
    return app
