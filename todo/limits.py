"""Rate limits (Flask-Limiter), login throttling (its `limits` library), client addresses.

Counters live in the worker's memory by default, or in Redis (RATE_LIMIT_STORAGE_URI) so
that every worker and every instance shares them. Windows move: "10 in 15 minutes" means
in the 15 minutes before each attempt. Without RATE_LIMIT, Flask-Limiter is not installed at
all: its hooks would cost every request a third of its time for nothing.
"""

import hashlib
import math
import time

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse
from limits.errors import StorageError
from limits.storage import storage_from_string
from limits.strategies import MovingWindowRateLimiter, RateLimiter
from werkzeug.exceptions import TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from todo import auth, database
from todo.errors import problem

_LIMITER_KEY = "todo.limiter"
_LOGINS_KEY = "todo.logins"
# POST /tokens: failed attempts (401s) allowed in the window, per client address and per
# username (without regard to case), before every attempt answers 429 until it has passed.
LOGIN_WINDOW = "15 minutes"
FAILED_LOGINS_PER_ADDRESS = parse(f"10 per {LOGIN_WINDOW}")
FAILED_LOGINS_PER_USERNAME = parse(f"20 per {LOGIN_WINDOW}")
# Endpoints no limit counts: a health check must answer whatever clients do.
EXEMPT_ENDPOINTS = frozenset({"api.health"})
# How soon to try again while the counters' storage (Redis) does not answer, in seconds.
STORAGE_RETRY_AFTER = 1


def _counter_name(secret: str) -> str:
    # Counters may be kept in Redis, where anyone with access lists their names: they are
    # named after a hash of the token (or of the username tried, which is sometimes a
    # password typed into the wrong field), never after it or the digest the database keeps.
    return hashlib.blake2b(secret.encode(), digest_size=16, person=b"todo-rate-limit").hexdigest()


def client_key() -> str:
    """Name whom the general limit counts: a bearer request's token, or else its address.

    Only a token that names a user counts as one: in AUTH none, or with a token made up,
    the address pays, so that inventing tokens buys no fresh budget. The lookup is the one
    the request makes anyway (todo.auth.identify), made a step earlier.
    """
    # Outside the API (the index, the docs page) nothing reads the database: neither does this.
    in_api = request.blueprint in auth.API_BLUEPRINTS
    token = auth.bearer_token() if auth.token_mode() and in_api else None
    if token is not None:
        database.ensure_schema()
        if auth.identify() is not None:
            return f"token:{_counter_name(token)}"
    return f"address:{request.remote_addr}"


def _exempt() -> bool:
    return request.endpoint in EXEMPT_ENDPOINTS or request.method == "OPTIONS"


def _strategy() -> RateLimiter:
    return current_app.extensions[_LOGINS_KEY]


def _seconds_until(reset_at: float) -> int:
    return max(1, math.ceil(reset_at - time.time()))


def _login_limits(username_key: str | None):
    prefix = current_app.config["RATE_LIMIT_KEY_PREFIX"]
    yield FAILED_LOGINS_PER_ADDRESS, (prefix, "login", "address", request.remote_addr or "")
    if username_key is not None:
        yield FAILED_LOGINS_PER_USERNAME, (prefix, "login", "username", _counter_name(username_key))


def login_wait(username_key: str | None) -> int | None:
    """Return how many seconds a login must wait, or None when it may be tried now."""
    strategy = _strategy()
    waits = [
        _seconds_until(strategy.get_window_stats(limit, *names).reset_time)
        for limit, names in _login_limits(username_key)
        if not strategy.test(limit, *names)
    ]
    return max(waits) if waits else None


def count_failed_login(username_key: str | None) -> None:
    """Count a failed login against the client's address and the username it tried."""
    strategy = _strategy()
    for limit, names in _login_limits(username_key):
        strategy.hit(limit, *names)


class Throttled(TooManyRequests):
    """A 429 that says how long to wait."""

    def __init__(self, description: str, retry_after: int):
        super().__init__(description, retry_after=retry_after)


def _rate_limited(error: RateLimitExceeded) -> Response:
    limiter = current_app.extensions[_LIMITER_KEY]
    current = limiter.current_limit
    # The moment the oldest counted request leaves the window (Flask-Limiter's reset_at is
    # rounded up a second further, past the window's length).
    wait = _seconds_until(current.window.reset_time) if current is not None else 1
    return problem(
        429,
        f"Too many requests: the limit is {error.description}; retry after {wait} seconds.",
        {"Retry-After": str(wait)},
    )


def _storage_unavailable(error: StorageError) -> Response:
    # Without its counters a request can be neither limited nor let through unlimited (that
    # would lift login throttling whenever Redis is down): answer as for a missing database.
    current_app.logger.warning("Rate limit storage unavailable: %s", error.storage_error)
    return problem(
        503,
        "The rate limit storage is unavailable; try again shortly.",
        {"Retry-After": str(STORAGE_RETRY_AFTER)},
    )


def init_app(app: Flask) -> None:
    """Count requests against RATE_LIMIT (when set) and keep the login counters."""
    proxies = app.config["TRUSTED_PROXIES"]
    if proxies:
        # Only then is X-Forwarded-For believed, and only as many hops as there are proxies.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies)  # type: ignore[method-assign]
    uri = app.config["RATE_LIMIT_STORAGE_URI"]
    # Storage failures arrive as one exception, whatever the storage, for _storage_unavailable.
    options = {**app.config["RATE_LIMIT_STORAGE_OPTIONS"], "wrap_exceptions": True}
    app.extensions[_LOGINS_KEY] = MovingWindowRateLimiter(storage_from_string(uri, **options))
    app.register_error_handler(StorageError, _storage_unavailable)
    rate_limit = app.config["RATE_LIMIT"]
    if rate_limit:
        app.extensions[_LIMITER_KEY] = Limiter(
            client_key,
            app=app,
            # One budget per client across every route (a default limit would be one per
            # route).
            application_limits=[rate_limit],
            application_limits_exempt_when=_exempt,
            storage_uri=uri,
            storage_options=options,
            strategy="moving-window",
            key_prefix=app.config["RATE_LIMIT_KEY_PREFIX"],
        )
        app.register_error_handler(RateLimitExceeded, _rate_limited)
