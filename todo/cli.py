"""The command line: `flask --app todo users|tokens|todos ...`.

These work whatever AUTH and REGISTRATION say, so that an administrator can always make the
first account and its token, and back up or restore every todo.
"""

import sys
from collections.abc import Callable
from functools import wraps
from typing import IO, Any

import click
import orjson
from flask import Flask
from flask.cli import AppGroup
from werkzeug.exceptions import HTTPException

from todo import accounts, streams, transfer
from todo.database import UNAVAILABLE_ERRORS
from todo.errors import InvalidInput
from todo.schemas import TOKEN_MAX_DAYS, TokenCreate, UserCreate, parse_body

users = AppGroup("users", help="Manage user accounts.")
tokens = AppGroup("tokens", help="Manage users' bearer tokens.")
todos = AppGroup("todos", help="Manage todos.")
changes = AppGroup("changes", help="Manage what GET /changes remembers for sync.")


def _clear_errors(command: Callable[..., Any]) -> Callable[..., Any]:
    """Turn what goes wrong into one line on standard error and exit status 1."""

    @wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except InvalidInput as error:
            problems = "; ".join(f"{e['field']} {e['message']}" for e in error.errors)
            raise click.ClickException(problems or error.detail) from None
        except HTTPException as error:
            raise click.ClickException(error.description or str(error)) from None
        except UNAVAILABLE_ERRORS:
            raise click.ClickException("The database is unavailable; try again shortly.") from None

    return run


def _user_id(username: str) -> int:
    user = accounts.find_user(username)
    if user is None:
        raise click.ClickException(f"There is no user {username!r}.")
    return user["id"]


def _read_password() -> str:
    if sys.stdin.isatty():
        return click.prompt("Password", hide_input=True, confirmation_prompt=True)
    # One line from a pipe or file: its line ending is not part of the password.
    return sys.stdin.readline().removesuffix("\n").removesuffix("\r")


@users.command("create")
@click.argument("username")
@_clear_errors
def create_user(username: str) -> None:
    """Create the user USERNAME; the password is asked for, or read as one line from stdin."""
    password = _read_password()
    # Validated as the API validates, with its messages, which never echo the password.
    user = parse_body(UserCreate, orjson.dumps({"username": username, "password": password}))
    created = accounts.create_user(user.username, user.password)
    click.echo(f"Created user {created['username']} (id {created['id']}).")


@tokens.command("create")
@click.argument("username")
@click.option("--name", default=None, help='What the token is for (default "token").')
@click.option(
    "--expires-in-days",
    type=click.IntRange(1, TOKEN_MAX_DAYS),
    default=None,
    help="Days until it expires (default: never).",
)
@_clear_errors
def create_token(username: str, name: str | None, expires_in_days: int | None) -> None:
    """Print a new bearer token for USERNAME (shown once; only its hash is kept)."""
    options = parse_body(
        TokenCreate, orjson.dumps({"name": name, "expires_in_days": expires_in_days})
    )
    token = accounts.create_token(_user_id(username), options.name, options.expires_in_days)
    click.echo(token["token"])


@todos.command("adopt")
@click.argument("username")
@_clear_errors
def adopt(username: str) -> None:
    """Give every todo without an owner (made while AUTH was none) to USERNAME."""
    adopted = accounts.adopt_todos(_user_id(username))
    click.echo(f"Gave {adopted} todo{'' if adopted == 1 else 's'} without an owner to {username}.")


# More demo todos than this at once is a mistake, not a demo.
SEED_MAX = 10_000_000
_NO_OWNER = (
    "The todos have no owner: with AUTH token no user sees them until `todos adopt` gives "
    "them to one."
)


@todos.command("seed", help=f"Make COUNT plausible demo todos, in bulk. {_NO_OWNER}")
@click.argument("count", type=click.IntRange(1, SEED_MAX))
@_clear_errors
def seed(count: int) -> None:
    made = transfer.seed_todos(count)
    click.echo(f"Made {made} demo todo{'' if made == 1 else 's'}.")


@todos.command("export")
@_clear_errors
def export() -> None:
    """Write every todo to standard output as JSON Lines, in id order: a backup.

    Each line is the todo exactly as the API shows it. Owners are not written: with AUTH
    token, every user's todos are in it.
    """
    with click.open_file("-", "wb") as stdout:
        transfer.export_todos(stdout)


@todos.command(
    "import",
    help="Read todos from FILE (- for standard input), as `todos export` wrote them, in one "
    "transaction: ids and timestamps are kept, so a backup restores exactly. Each line is "
    "checked as the API checks a new todo; at a bad line, or an id the database already has, "
    f"nothing is imported. {_NO_OWNER}",
)
@click.argument("file", type=click.File("rb"))
@_clear_errors
def import_(file: IO[bytes]) -> None:
    try:
        imported = transfer.import_todos(file)
    except transfer.ImportRefused as error:
        raise click.ClickException(f"{error}. Nothing was imported.") from None
    click.echo(f"Imported {imported} todo{'' if imported == 1 else 's'}.")


@changes.command("prune")
@click.option(
    "--days", type=click.IntRange(1, 36500), default=None,
    help="Forget deletions older than this many days (default: TOMBSTONE_DAYS, 30).",
)  # fmt: skip
@_clear_errors
def prune(days: int | None) -> None:
    """Forget deleted todos older than TOMBSTONE_DAYS; a client whose cursor is older than
    the deletions forgotten syncs again from the start (410). Workers also do this by
    themselves, at most once a minute."""
    pruned = streams.prune(days)
    click.echo(f"Forgot {pruned} deleted todo{'' if pruned == 1 else 's'}.")


def init_app(app: Flask) -> None:
    """Add the commands to `flask --app todo`."""
    for group in (users, tokens, todos, changes):
        app.cli.add_command(group)
