"""Who is asking: the AUTH setting, bearer tokens on API requests, and HTTP Basic for logins.

In AUTH `none` every client shares one list and the owner of a request is None. In `token`
each API request names its user with `Authorization: Bearer <token>`, looked up once per
request (no cache: a revoked token is refused at once by every worker).
"""

import base64
import binascii

from flask import current_app, g, request
from werkzeug.exceptions import Unauthorized

from todo import accounts

AUTH_MODES = ("none", "token")
REALM = "todo"
# The API endpoints anyone may call in token mode; every other one needs a bearer token.
PUBLIC_ENDPOINTS = frozenset({"api.health", "accounts.create_user", "accounts.create_token"})


def token_mode() -> bool:
    """Tell whether clients are known by their tokens (AUTH token)."""
    return current_app.config["AUTH"] == "token"


def current_owner() -> int | None:
    """Return the user the request acts for; None in AUTH none, where the list is shared."""
    return g.get("owner")


def current_user() -> int:
    """Return the user a request of the accounts API acts for (they all need a token)."""
    owner = g.get("owner")
    assert owner is not None, "require_token ran before this view"
    return owner


def bearer_token() -> str | None:
    """Return what follows `Bearer` in the Authorization header; None without such a header.

    Another scheme counts as none; anything after `Bearer`, empty included, is a token to
    judge.
    """
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer":
        return None
    return credentials.strip(" \t")


class Unauthenticated(Unauthorized):
    """A 401 with its challenge written out as RFC 6750 and RFC 7617 show it, quotes and all.

    (Werkzeug's own leaves out quotes that the grammar allows to be left out, and some
    clients do not read such a challenge.)
    """

    def __init__(self, description: str, scheme: str, error: str | None = None):
        super().__init__(description)
        challenge = f'{scheme} realm="{REALM}"'
        self.challenge = challenge if error is None else f'{challenge}, error="{error}"'

    def get_headers(self, environ=None, scope=None) -> list[tuple[str, str]]:
        return [*super().get_headers(environ, scope), ("WWW-Authenticate", self.challenge)]


def identify() -> int | None:
    """Return the user the request's bearer token names; None without a token that does.

    Looked up once per request, whoever asks first (the rate limit, then require_token).
    """
    if "identity" not in g:
        token = bearer_token()
        g.identity = None if token is None else accounts.token_owner(token)
    return g.identity


def require_token() -> None:
    """Name the user an API request acts for, from its bearer token; 401 without a good one.

    Runs before every view of the API blueprints, after the schema is ready, so that a
    database that does not answer is a 503, never a 401.
    """
    if not token_mode() or request.endpoint in PUBLIC_ENDPOINTS or request.method == "OPTIONS":
        return
    if bearer_token() is None:
        raise Unauthenticated(
            "Send a token: Authorization: Bearer <token> (POST /api/v1/tokens makes one).",
            "Bearer",
        )
    owner = identify()
    if owner is None:
        raise Unauthenticated(
            "The token is unknown, malformed, expired or revoked.", "Bearer", "invalid_token"
        )
    g.owner = owner


def basic_credentials() -> tuple[str, str] | None:
    """Return the username and password of `Authorization: Basic`, read as UTF-8; None if
    the header is missing or malformed."""
    scheme, _, encoded = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(" \t"), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    username, colon, password = decoded.partition(":")
    return (username, password) if colon else None


def wrong_credentials() -> Unauthenticated:
    """The answer to a login with a wrong, unknown or missing username or password."""
    return Unauthenticated(
        "Send a registered username and its password with HTTP Basic authentication.", "Basic"
    )
