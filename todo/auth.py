"""Who is asking: the AUTH setting, bearer tokens on API requests, and HTTP Basic for logins.

In AUTH `none` every client shares one list and the owner of a request is None. In `token`
each API request names its user with `Authorization: Bearer <token>`, looked up once per
request (no cache: a revoked token is refused at once by every worker).
"""

import base64
import binascii

from flask import Flask, current_app, g, request
from werkzeug.exceptions import Unauthorized

from todo import accounts
from todo.store import Bearer, Owner

AUTH_MODES = ("none", "token")
REALM = "todo"
# The API endpoints anyone may call in token mode; every other one needs a bearer token.
# The blueprints of the API, whose views need a token (todo.views.routes, .accounts).
API_BLUEPRINTS = ("api", "accounts")
PUBLIC_ENDPOINTS = frozenset(
    {
        "api.health",
        "accounts.create_user",
        "accounts.create_token",
        "index.root",
        "index.api_index",
    }
)


def token_mode() -> bool:
    """Tell whether clients are known by their tokens (AUTH token)."""
    return current_app.config["AUTH"] == "token"


def current_owner() -> Owner:
    """Return whose todos the request may touch; None in AUTH none, where the list is shared."""
    return g.get("owner")


def current_user() -> int:
    """Return the user a request of the accounts API acts for (they all need a token)."""
    assert "owner" in g, "require_token ran before this view"
    return confirm_token()


def bearer_token() -> str | None:
    """Return what follows `Bearer` in the Authorization header; None without such a header.

    Another scheme counts as none; anything after `Bearer`, empty included, is a token to
    judge.
    """
    authorization = request.headers.get("Authorization", "")
    if not is_bearer(authorization):
        return None
    return authorization.partition(" ")[2].strip(" \t")


def is_bearer(authorization: str) -> bool:
    """Tell whether an Authorization header's value is of the Bearer scheme."""
    return authorization.partition(" ")[0].lower() == "bearer"


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


def _invalid_token() -> Unauthenticated:
    return Unauthenticated(
        "The token is unknown, malformed, expired or revoked.", "Bearer", "invalid_token"
    )


def confirm_token() -> int:
    """Return the user the request's token names; raise its 401 if it names no one."""
    owner = identify()
    if owner is None:
        raise _invalid_token()
    return owner


def require_token() -> None:
    """Name whose todos an API request may touch, from its bearer token; 401 without one.

    Runs before every view of the API blueprints, after the schema is ready, so that a
    database that does not answer is a 503, never a 401. A token of the right shape is not
    looked up here: each statement of the store finds its owner by the token's digest (one
    statement for GET one todo, token check included), and looks it up only when it finds
    nothing, to tell a 401 from a 404 (todo.store.Bearer).
    """
    if request.endpoint in PUBLIC_ENDPOINTS or request.method == "OPTIONS":
        return
    token = bearer_token()
    if token is None:
        raise Unauthenticated(
            "Send a token: Authorization: Bearer <token> (POST /api/v1/tokens makes one).",
            "Bearer",
        )
    if not accounts.looks_like_token(token):
        raise _invalid_token()
    # Already looked up (by the rate limit): known by id.
    g.owner = g.identity if "identity" in g else Bearer(accounts.digest(token), confirm_token)
    if g.owner is None:
        raise _invalid_token()


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


def init_app(app: Flask) -> None:
    """In AUTH token, check the token before every view of the API (after the schema check).

    In AUTH none the check is not installed at all, so it costs the shared list nothing.
    """
    if app.config["AUTH"] == "token":
        for blueprint in API_BLUEPRINTS:
            app.before_request_funcs.setdefault(blueprint, []).append(require_token)
