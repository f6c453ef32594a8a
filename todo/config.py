"""Settings: defaults, then the environment, then the overrides given to the factory."""

import os
import re
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
    # How clients are known: "none" (one shared list, the classic contract) or "token".
    "AUTH": "none",
    # AUTH token: whether anyone may register with POST /users ("open") or only the CLI
    # ("closed").
    "REGISTRATION": "closed",
    # A limit on every client's requests, as "N per second|minute|hour|day"; None: no limit.
    "RATE_LIMIT": None,
    # Where rate limit and login counters live: this worker's memory, or redis://host:port.
    "RATE_LIMIT_STORAGE_URI": "memory://",
    # Names of those counters start with this, so that several services can share a Redis.
    "RATE_LIMIT_KEY_PREFIX": "todo",
    # Options for that storage; a Redis that does not answer fails requests fast (503).
    "RATE_LIMIT_STORAGE_OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2},
    # Proxies in front that append to X-Forwarded-For; 0: the connection's address is the
    # client's, and forwarded headers are ignored.
    "TRUSTED_PROXIES": 0,
    # Origins of browser apps that may call the API (a list, a comma-separated string or
    # "*"); None: no CORS headers at all.
    "CORS_ORIGINS": None,
    # How long GET /changes remembers a deleted todo, in days: a client that syncs less often
    # than that starts again from nothing.
    "TOMBSTONE_DAYS": 30,
}
# The values some settings may take; anything else stops the app from starting.
CHOICES = {"AUTH": ("none", "token"), "REGISTRATION": ("closed", "open")}
_RATE_LIMIT = re.compile(r"[1-9][0-9]{0,8} per (second|minute|hour|day)")

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

    _check(app.config)


class SettingsError(ValueError):
    """A setting the app must not start with."""


def _check(config: dict[str, Any]) -> None:
    for name, choices in CHOICES.items():
        if config[name] not in choices:
            raise SettingsError(
                f"{name} must be one of {', '.join(choices)}, not {config[name]!r}."
            )
    rate_limit = config["RATE_LIMIT"]
    if rate_limit is not None and not (
        isinstance(rate_limit, str) and _RATE_LIMIT.fullmatch(rate_limit)
    ):
        raise SettingsError(
            f"RATE_LIMIT must be like '100 per minute' (second, minute, hour or day), not "
            f"{rate_limit!r}."
        )
    proxies = config["TRUSTED_PROXIES"]
    if isinstance(proxies, bool) or not isinstance(proxies, int) or not 0 <= proxies <= 10:
        raise SettingsError(
            f"TRUSTED_PROXIES must be a number of proxies, 0 to 10, not {proxies!r}."
        )
    days = config["TOMBSTONE_DAYS"]
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= 36500:
        raise SettingsError(f"TOMBSTONE_DAYS must be a number of days, 1 to 36500, not {days!r}.")
    origins = config["CORS_ORIGINS"]
    if isinstance(origins, str):
        config["CORS_ORIGINS"] = [origin.strip() for origin in origins.split(",") if origin.strip()]
    elif origins is not None and not (
        isinstance(origins, list | tuple) and all(isinstance(o, str) for o in origins)
    ):
        raise SettingsError(f'CORS_ORIGINS must be a list of origins or "*", not {origins!r}.')
