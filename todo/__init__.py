"""A Todo REST API: `create_app()` builds it."""

from collections.abc import Mapping
from typing import Any

from flask import Flask
from flask_migrate import Migrate

from todo import database, errors
from todo.config import configure
from todo.json import OrjsonProvider
from todo.schema import MIGRATIONS, upgrade_schema
from todo.views.docs import docs
from todo.views.routes import api

migrate = Migrate(directory=str(MIGRATIONS))


def create_app(config_overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings, JSON, database, routes, errors, schema."""
    # No static folder: every path outside the API is an unknown path, answered as a problem.
    app = Flask(__name__, instance_relative_config=True, static_folder=None)
    configure(app, config_overrides)
    app.json = OrjsonProvider(app)
    database.init_app(app)
    migrate.init_app(app, database.db)
    app.register_blueprint(api, url_prefix="/api/v1")
    app.register_blueprint(docs, url_prefix="/api/v1")
    errors.init_app(app)
    if app.config["SCHEMA_AUTO_UPGRADE"]:
        with app.app_context():
            upgrade_schema()
    return app
