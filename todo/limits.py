"""Rate limits and login throttling (Flask-Limiter), and which address a client has.

Counters live in the worker's memory by default, or in Redis (RATE_LIMIT_STORAGE_URI) so
that every worker and every instance shares them. Windows move: "10 in 15 minutes" means
in the 15 minutes before each attempt.
"""

import hashlib
import math
import time

from flask import Flask, Response, current_app, request
from flask_limiter import Limiter, RateLimitExceeded
from limits import parse
from limits.strategies import RateLimiter
from werkzeug.exceptions import TooManyRequests
from werkzeug.middleware.proxy_fix import ProxyFix

from todo.auth import bearer_token
from todo.errors import problem

_EXTENSION_KEY = "todo.limiter"
# POST /tokens: failed attempts (401s) allowed in the window, per client address and per
# username (without regard to case), before every attempt answers 429 until it has passed.
LOGIN_WINDOW = "15 minutes"
FAILED_LOGINS_PER_ADDRESS = parse(f"10 per {LOGIN_WINDOW}")
FAILED_LOGINS_PER_USERNAME = parse(f"20 per {LOGIN_WINDOW}")
# Endpoints no limit counts: a health check must answer whatever clients do.
EXEMPT_ENDPOINTS = frozenset({"api.health"})


def _rate_key(token: str) -> str:
    # Counters may be kept in Redis: they are named after a keyed hash of the token, never
    # after the token or the digest the database keeps.
    return hashlib.blake2b(token.encode(), digest_size=16, person=b"todo-rate-limit").hexdigest()


def client_key() -> str:
    """Name whom the general limit counts: a bearer request's token, or else its address."""
    token = bearer_token()
    if token is not None:
        return f"token:{_rate_key(token)}"
    return f"address:{request.remote_addr}"


def _exempt() -> bool:
    return request.endpoint in EXEMPT_ENDPOINTS or request.method == "OPTIONS"


def _strategy() -> RateLimiter:
    return current_app.extensions[_EXTENSION_KEY].limiter


def _seconds_until(reset_at: float) -> int:
    return max(1, math.ceil(reset_at - time.time()))


def _login_limits(username_key: str | None):
    prefix = current_app.config["RATE_LIMIT_KEY_PREFIX"]
    yield FAILED_LOGINS_PER_ADDRESS, (prefix, "login", "address", request.remote_addr or "")
    if username_key is not None:
        yield FAILED_LOGINS_PER_USERNAME, (prefix, "login", "username", username_key)


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
    limiter = current_app.extensions[_EXTENSION_KEY]
    current = limiter.current_limit
    wait = _seconds_until(current.reset_at) if current is not None else 1
    return problem(
        429,
        f"Too many requests: the limit is {error.description}; retry after {wait} seconds.",
        {"Retry-After": str(wait)},
    )


def init_app(app: Flask) -> None:
    """Count requests against RATE_LIMIT (when set) and keep the login counters."""
    proxies = app.config["TRUSTED_PROXIES"]
    if proxies:
        # Only then is X-Forwarded-For believed, and only as many hops as there are proxies.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies)  # type: ignore[method-assign]
    rate_limit = app.config["RATE_LIMIT"]
    limiter = Limiter(
        client_key,
        app=app,
        default_limits=[rate_limit] if rate_limit else [],
        storage_uri=app.config["RATE_LIMIT_STORAGE_URI"],
        storage_options=app.config["RATE_LIMIT_STORAGE_OPTIONS"],
        strategy="moving-window",
        key_prefix=app.config["RATE_LIMIT_KEY_PREFIX"],
        default_limits_exempt_when=_exempt,
    )
    app.extensions[_EXTENSION_KEY] = limiter
    app.register_error_handler(RateLimitExceeded, _rate_limited)
