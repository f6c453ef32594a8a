"""The accounts blueprint (AUTH token only): registering, logging in for tokens, revoking.

Registered under /api/v1 only in token mode; in AUTH none these paths do not exist.
"""

from flask import Blueprint, current_app, request, url_for
from werkzeug.exceptions import Forbidden

from todo import accounts, auth, limits
from todo.openapi import documented as _documented
from todo.openapi import json_answer, ref, removed_answer
from todo.schemas import (
    TokenCreate,
    UserCreate,
    parse_body,
    record_json,
    records_json,
)
from todo.views.http import json_body, json_response

accounts_api = Blueprint("accounts", __name__)


def documented(**declared):
    return _documented(tag="accounts", **declared)


@accounts_api.post("/users")
@documented(
    body=UserCreate,
    auth="none",
    description="Open only when the setting REGISTRATION is `open`; the command line "
    "(`flask --app todo users create NAME`) always works.",
    responses={
        201: json_answer("The new user.", ref("UserOut"))
        | {"headers": {"Location": ref("Location", "headers")}},
    },
    problems=(
        400,
        (403, "Registration is closed."),
        (409, "The username is taken, in some letter case."),
        411,
        413,
        415,
        501,
        503,
    ),
)
def create_user():
    """Register a user."""
    if current_app.config["REGISTRATION"] != "open":
        raise Forbidden("Registration is closed: an administrator creates accounts.")
    payload = parse_body(UserCreate, json_body())
    user = accounts.create_user(payload.username, payload.password)
    response = json_response(record_json(user), 201)
    response.headers["Location"] = url_for(".get_me")
    return response


@accounts_api.get("/users/me")
@documented(responses={200: json_answer("The caller.", ref("UserOut"))}, problems=(503,))
def get_me():
    """Show the user the token belongs to."""
    user = accounts.get_user(auth.current_user())
    return json_response(record_json(user))


@accounts_api.delete("/users/me")
@documented(
    description="Its todos, tokens and idempotency keys go with it, and its username is free "
    "again.",
    responses={200: json_answer("The deleted user.", ref("UserOut"))},
    problems=(503,),
)
def delete_me():
    """Delete the caller's account and everything it owns."""
    user = accounts.delete_user(auth.current_user())
    return json_response(record_json(user or {}))


@accounts_api.post("/tokens")
@documented(
    body=TokenCreate,
    body_required=False,
    auth="basic",
    description="Log in with HTTP Basic (`username:password`, UTF-8). The token is shown "
    "this once. After 10 failed attempts from one address, or 20 for one username, within 15 "
    "minutes, attempts answer 429 until the window has passed.",
    responses={201: json_answer("The new token, with its secret.", ref("TokenCreated"))},
    problems=(400, 411, 413, 415, 429, 501, 503),
)
def create_token():
    """Make a bearer token for the user named by HTTP Basic credentials."""
    credentials = auth.basic_credentials()
    username_key = None if credentials is None else accounts.username_key(credentials[0])
    _refuse_if_throttled(username_key)
    # A request without a body asks for the defaults, as `{}` does. A chunked body declares
    # no length but is a body all the same: json_body refuses it (411) rather than ignore it.
    has_body = request.content_length or "Transfer-Encoding" in request.headers
    payload = parse_body(TokenCreate, json_body()) if has_body else TokenCreate()
    user_id = None if credentials is None else accounts.login(*credentials)
    if user_id is None:
        limits.count_failed_login(username_key)
        raise auth.wrong_credentials()
    # Guesses sent at once all pass the first check; whichever ends after the limit was
    # reached is refused even when right, so no guess past the limit can ever succeed.
    _refuse_if_throttled(username_key)
    token = accounts.create_token(user_id, payload.name, payload.expires_in_days)
    return json_response(record_json(token), 201)


def _refuse_if_throttled(username_key: str | None) -> None:
    wait = limits.login_wait(username_key)
    if wait is not None:
        raise limits.Throttled(
            f"Too many failed logins; try again in {wait} seconds.", retry_after=wait
        )


@accounts_api.get("/tokens")
@documented(
    responses={
        200: json_answer(
            "The caller's tokens, ordered by id.", {"type": "array", "items": ref("TokenOut")}
        )
    },
    problems=(503,),
)
def list_tokens():
    """List the caller's tokens, without their secrets."""
    return json_response(records_json(accounts.list_tokens(auth.current_user())))


@accounts_api.delete("/tokens/<todo_id:token_id>")
@documented(
    description="Revoking is idempotent: when the caller has no such token the answer is 200 "
    "with `{}`. A revoked token is refused at once.",
    responses={
        200: removed_answer(
            "The revoked token, or `{}` when there was none.", "TokenOut", "No such token."
        )
    },
    problems=(503,),
)
def revoke_token(token_id: int):
    """Revoke one of the caller's tokens."""
    token = accounts.revoke_token(auth.current_user(), token_id)
    return json_response(record_json(token or {}))
