"""Settings: defaults, then the environment, then the overrides given to the factory."""

import os
from collections.abc import Mapping
from typing import Any

from flask import Flask

DEFAULTS: dict[str, Any] = {
    # Largest request body accepted, in bytes; larger ones are answered with 413.
    "MAX_CONTENT_LENGTH": 64 * 1024,
    # How long an Idempotency-Key is remembered, in seconds.
    "IDEMPOTENCY_KEY_TTL": 24 * 60 * 60,
    # How long a request waits for SQLite's write lock before answering 503, in seconds.
    "SQLITE_BUSY_TIMEOUT": 30,
    # How long to wait for a database server to accept a connection, in seconds.
    "DATABASE_CONNECT_TIMEOUT": 2,
    # MariaDB/MySQL only: how long to wait for any answer from the server, in seconds.
    "DATABASE_READ_TIMEOUT": 30,
    # Connections kept per worker process for a database server; match gunicorn's threads.
    "DATABASE_POOL_SIZE": 4,
    "SQLALCHEMY_ENGINE_OPTIONS": {},
    # Create or migrate the schema when the app starts; turn off to run `flask db upgrade` yourself.
    "SCHEMA_AUTO_UPGRADE": True,
}

# Common spellings of database URLs, mapped to the drivers this project installs.
_URL_SCHEMES = {
    "postgres://": "postgresql+psycopg://",
    "postgresql://": "postgresql+psycopg://",
    "mysql://": "mysql+pymysql://",
    "mariadb://": "mysql+pymysql://",
    "mariadb+pymysql://": "mysql+pymysql://",
}


def normalize_database_url(url: str) -> str:
    """Point a plain postgres:// or mysql:// URL at the driver this project installs."""
    for scheme, replacement in _URL_SCHEMES.items():
        if url.startswith(scheme):
            return replacement + url.removeprefix(scheme)
    return url


def configure(app: Flask, overrides: Mapping[str, Any] | None = None) -> None:
    """Load the settings into the app, lowest precedence first."""
    app.config.from_mapping(DEFAULTS)
    if os.environ.get("DATABASE_URL"):
        app.config["SQLALCHEMY_DATABASE_URI"] = os.environ["DATABASE_URL"]
    app.config.from_prefixed_env("TODO")
    app.config.from_mapping(overrides or {})

    url = app.config.get("SQLALCHEMY_DATABASE_URI")
    if not url:
        os.makedirs(app.instance_path, exist_ok=True)
        url = "sqlite:///" + os.path.join(app.instance_path, "db.sqlite")
    if isinstance(url, str):
        app.config["SQLALCHEMY_DATABASE_URI"] = normalize_database_url(url)
    else:
        app.config["SQLALCHEMY_DATABASE_URI"] = url
