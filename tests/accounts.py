"""The accounts tests' base class: a token-mode app per class whose users are made once."""

import re
import tempfile
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import delete, select

from tests.base import PASSWORD, TOKEN_MODE, AppTestCase, basic, bearer
from todo import accounts, create_app
from todo.models import db
from todo.models.idempotency import IdempotencyKey
from todo.models.todo import Todo
from todo.models.user import Token, User

USERS = "/api/v1/users"
ME = "/api/v1/users/me"
TOKENS = "/api/v1/tokens"
TODOS = "/api/v1/todos"
TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
TOKEN = re.compile(r"todo_[A-Za-z0-9_-]{43}")
NO_TOKEN = 'Bearer realm="todo"'
BAD_TOKEN = 'Bearer realm="todo", error="invalid_token"'
BAD_LOGIN = 'Basic realm="todo"'
# Spaces and characters outside ASCII, which HTTP Basic carries as UTF-8.
UNICODE_PASSWORD = "pässwörd ключ 🔑"


def dispose(app) -> None:
    """Close an app's database connections."""
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


def read_timestamp(value: str) -> datetime:
    """Read a timestamp as the API writes it, asserting its format."""
    assert TIMESTAMP.fullmatch(value), value
    return datetime.fromisoformat(value)


class AccountsTestCase(AppTestCase):
    """One token-mode app per class; each test starts with only the class's users and tokens.

    A user costs a deliberately slow password hash (argon2id at its real cost), so a class
    makes the users it names in `users` once, each with one token (`self.tokens[name]`), and
    every test gets back to that state: the rows tests add are deleted, login counters reset.
    """

    config: Mapping[str, Any] = TOKEN_MODE
    users: tuple[str, ...] = ()
    # SQLite in a file rather than in memory, so that a second app can share the database.
    sqlite_file = False

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        cls.url = cls.class_database_url()
        cls.app = create_app(
            {
                "SQLALCHEMY_DATABASE_URI": cls.url,
                "TESTING": True,
                # Login counters in this app's memory, so that setUp may reset them all.
                "RATE_LIMIT_STORAGE_URI": "memory://",
                "RATE_LIMIT_KEY_PREFIX": uuid4().hex,
            }
            | dict(cls.config)
        )
        cls.addClassCleanup(dispose, cls.app)
        cls.user_ids: dict[str, int] = {}
        cls.tokens: dict[str, str] = {}
        with cls.app.app_context():
            for name in cls.users:
                cls.user_ids[name] = accounts.create_user(name, PASSWORD)["id"]
                cls.tokens[name] = accounts.create_token(cls.user_ids[name], None, None)["token"]
        cls.token_digests = [accounts.digest(token) for token in cls.tokens.values()]

    @classmethod
    def class_database_url(cls) -> str:
        if cls.database != "SQLite":
            return cls.server_database_url()
        if not cls.sqlite_file:
            return "sqlite:///:memory:"
        folder = tempfile.TemporaryDirectory()
        cls.addClassCleanup(folder.cleanup)
        return f"sqlite:///{folder.name}/todo.sqlite"

    def setUp(self) -> None:
        with self.app.app_context():
            for statement in (
                delete(IdempotencyKey),
                delete(Todo),
                delete(Token).where(Token.digest.not_in(self.token_digests)),
                delete(User).where(User.id.not_in(list(self.user_ids.values()))),
            ):
                db.session.execute(statement)
            db.session.commit()
        # Failed logins of earlier tests must not throttle this one's.
        self.app.extensions["todo.logins"].storage.reset()
        self.client = self.app.test_client()

    def tearDown(self) -> None:
        """The class's app outlives the test (see setUpClass)."""

    def other_app(self, **settings: Any):
        """Build another app with only these settings, closed after the test.

        It has a database of its own, unless settings name one (in-memory SQLite is private).
        """
        app = create_app(
            {"SQLALCHEMY_DATABASE_URI": self.database_url(), "TESTING": True} | settings
        )
        self.addCleanup(dispose, app)
        return app

    def flask(self, *args: str, input: str | None = None):
        """Run `flask --app todo ARGS` on the class's app, as the command line does."""
        # Inside the app's context: the commands use whichever app is current, and one that an
        # earlier test left pushed must not be it.
        with self.app.app_context():
            return self.app.test_cli_runner().invoke(args=list(args), input=input)

    def as_user(self, name: str) -> dict[str, str]:
        """Return the headers that present the class user's token."""
        return bearer(self.tokens[name])

    def register(self, username: str, password: str = PASSWORD):
        return self.client.post(USERS, json={"username": username, "password": password})

    def log_in(self, username: str, password: str = PASSWORD, **body: Any):
        return self.client.post(TOKENS, headers=basic(username, password), json=body or None)

    def assertUnauthorized(self, response, challenge: str) -> None:  # noqa: N802
        """Assert a 401 problem with exactly this WWW-Authenticate challenge."""
        self.assertProblem(response, 401)
        self.assertEqual(response.headers.getlist("WWW-Authenticate"), [challenge])

    def rows(self, model) -> list[dict[str, Any]]:
        """Return every stored row of a model's table, column by column."""
        with self.app.app_context():
            result = db.session.execute(select(model.__table__))
            return [dict(row._mapping) for row in result]
