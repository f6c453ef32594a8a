"""The accounts command line: `flask --app todo users|tokens|todos ...`, REGISTRATION or not."""

import os
import subprocess
import sys
import tempfile
import unittest
from datetime import timedelta

from tests.accounts import TOKEN, AccountsTestCase, dispose, read_timestamp
from tests.base import PASSWORD, basic, bearer
from todo import create_app
from todo.models import db
from todo.models.todo import Todo
from todo.models.user import User

TODOS = "/api/v1/todos"
# Every group and command, with words its --help must say.
HELP = {
    (): "users",
    ("users",): "Manage user accounts",
    ("users", "create"): "Create the user USERNAME",
    ("tokens",): "Manage users' bearer tokens",
    ("tokens", "create"): "Print a new bearer token for USERNAME",
    ("todos",): "Manage todos",
    ("todos", "adopt"): "Give every todo without an owner",
}


class TestCommands(AccountsTestCase):
    # Registration through the API stays closed: the command line works all the same.
    config = {"AUTH": "token"}
    users = ("bob",)

    def assertRefused(self, result, *words: str) -> None:  # noqa: N802
        """Assert that a command failed and said why on standard error, in these words."""
        self.assertNotEqual(result.exit_code, 0, result.output)
        for word in words:
            self.assertIn(word, result.stderr)
        self.assertNotIn("Traceback", result.output)
        self.assertNotRegex(result.output, TOKEN)

    def usernames(self) -> list[str]:
        return [row["username"] for row in self.rows(User)]

    def test_users_create_reads_one_line_from_stdin_and_the_user_can_log_in(self):
        self.assertEqual(self.client.post("/api/v1/users").status_code, 403)
        result = self.flask("users", "create", "alice", input=f"{PASSWORD}\r\nnot read\n")
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("Created user alice", result.output)
        self.assertNotIn(PASSWORD, result.output)
        # The line ending is not part of the password, and nothing after the line is.
        response = self.client.post("/api/v1/tokens", headers=basic("alice", PASSWORD))
        self.assertEqual(response.status_code, 201, response.get_data(as_text=True))

    def test_a_taken_username_is_refused(self):
        result = self.flask("users", "create", "BOB", input=f"{PASSWORD}\n")
        self.assertRefused(result, "'BOB' is taken")
        self.assertEqual(self.usernames(), ["bob"])

    def test_an_invalid_username_or_password_is_refused_naming_the_rule(self):
        for username, password, rule in (
            ("al ice", PASSWORD, "username must be 1 to 64 characters from A-Z a-z 0-9 . _ -"),
            ("a" * 65, PASSWORD, "username must be 1 to 64"),
            ("carol", "seven!7", "password must be at least 8"),
            ("carol", "x" * 1025, "password must be at most 1024"),
            ("carol", "", "password must be at least 8"),
        ):
            with self.subTest(username=username, password=password[:10]):
                result = self.flask("users", "create", username, input=f"{password}\n")
                self.assertRefused(result, rule)
                if password:
                    self.assertNotIn(password, result.output)
        self.assertEqual(self.usernames(), ["bob"])

    def test_tokens_create_prints_only_a_token_that_works(self):
        result = self.flask("tokens", "create", "BOB")
        self.assertEqual(result.exit_code, 0, result.output)
        token = result.output.removesuffix("\n")
        self.assertRegex(token, f"^{TOKEN.pattern}$")
        me = self.client.get("/api/v1/users/me", headers=bearer(token))
        self.assertEqual((me.status_code, me.get_json()["username"]), (200, "bob"))
        listed = self.client.get("/api/v1/tokens", headers=bearer(token)).get_json()
        self.assertEqual((listed[-1]["name"], listed[-1]["expires_at"]), ("token", None))

    def test_tokens_create_honours_name_and_lifetime(self):
        result = self.flask("tokens", "create", "bob", "--name", "laptop", "--expires-in-days", "7")
        self.assertEqual(result.exit_code, 0, result.output)
        listed = self.client.get("/api/v1/tokens", headers=bearer(result.output.strip()))
        made = listed.get_json()[-1]
        self.assertEqual(made["name"], "laptop")
        lifetime = read_timestamp(made["expires_at"]) - read_timestamp(made["created_at"])
        self.assertEqual(lifetime, timedelta(days=7))

    def test_token_options_out_of_range_are_refused(self):
        for option, value, words in (
            ("--expires-in-days", "0", ["--expires-in-days", "1<=x<=3650"]),
            ("--expires-in-days", "3651", ["--expires-in-days", "1<=x<=3650"]),
            ("--expires-in-days", "soon", ["--expires-in-days", "integer"]),
            ("--name", "", ["name must be at least 1"]),
            ("--name", "n" * 81, ["name must be at most 80"]),
        ):
            with self.subTest(option=option, value=value):
                self.assertRefused(self.flask("tokens", "create", "bob", option, value), *words)
        listed = self.client.get("/api/v1/tokens", headers=self.as_user("bob")).get_json()
        self.assertEqual(len(listed), 1)

    def test_an_unknown_user_is_refused(self):
        for command in (("tokens", "create"), ("todos", "adopt")):
            with self.subTest(command=command):
                self.assertRefused(self.flask(*command, "nobody"), "There is no user 'nobody'")

    def test_todos_adopt_prints_how_many_todos_it_gave(self):
        with self.app.app_context():
            db.session.add_all([Todo(title="old"), Todo(title="older")])
            db.session.commit()
        for expected in ("Gave 2 todos without an owner to bob.", "Gave 0 todos"):
            with self.subTest(expected=expected):
                result = self.flask("todos", "adopt", "bob")
                self.assertEqual(result.exit_code, 0, result.output)
                self.assertIn(expected, result.output)
        self.assertEqual(len(self.client.get(TODOS, headers=self.as_user("bob")).get_json()), 2)

    def test_every_command_and_group_explains_itself(self):
        for command, words in HELP.items():
            with self.subTest(command=command):
                result = self.flask(*command, "--help")
                self.assertEqual(result.exit_code, 0, result.output)
                self.assertIn("Usage:", result.output)
                self.assertIn(words, result.output)


class TestCommandLineInAShell(unittest.TestCase):
    """The commands as an administrator runs them: `flask --app todo ...` in a shell."""

    slow = True

    def setUp(self) -> None:
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.folder = folder.name
        self.url = f"sqlite:///{folder.name}/todo.sqlite"

    def flask(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess:
        """Run `flask --app todo ARGS` with the database and AUTH in the environment."""
        environment = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith("TODO_") and name != "DATABASE_URL"
        }
        environment |= {"DATABASE_URL": self.url, "TODO_AUTH": "token"}
        return subprocess.run(
            [sys.executable, "-m", "flask", "--app", "todo", *args],
            input=input,
            capture_output=True,
            text=True,
            env=environment,
            cwd=self.folder,
            timeout=120,
        )

    def app(self, **settings):
        """Build an app on the same database file."""
        app = create_app({"SQLALCHEMY_DATABASE_URI": self.url, "TESTING": True} | settings)
        self.addCleanup(dispose, app)
        return app

    def test_help_names_the_commands_and_their_options(self):
        result = self.flask("--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        for group in ("users", "tokens", "todos"):
            self.assertIn(group, result.stdout)
        result = self.flask("tokens", "create", "--help")
        self.assertEqual(result.returncode, 0, result.stderr)
        for words in (HELP[("tokens", "create")], "--name", "--expires-in-days"):
            self.assertIn(words, result.stdout)

    def test_an_administrator_gives_the_shared_list_to_its_first_user(self):
        # The tutorial's shared list, from before accounts (AUTH none).
        shared = self.app().test_client()
        for title in ("old", "older"):
            self.assertEqual(shared.post(TODOS, json={"title": title}).status_code, 201)

        created = self.flask("users", "create", "alice", input=f"{PASSWORD}\r\n")
        self.assertEqual(created.returncode, 0, created.stderr)
        self.assertIn("Created user alice", created.stdout)
        made = self.flask("tokens", "create", "alice", "--name", "shell")
        self.assertEqual(made.returncode, 0, made.stderr)
        token = made.stdout.removesuffix("\n")
        self.assertRegex(token, f"^{TOKEN.pattern}$")
        adopted = self.flask("todos", "adopt", "alice")
        self.assertEqual(adopted.returncode, 0, adopted.stderr)
        self.assertIn("Gave 2 todos without an owner to alice.", adopted.stdout)

        client = self.app(AUTH="token").test_client()
        todos = client.get(TODOS, headers=bearer(token)).get_json()
        self.assertEqual([todo["title"] for todo in todos], ["old", "older"])
        login = client.post("/api/v1/tokens", headers=basic("alice", PASSWORD))
        self.assertEqual(login.status_code, 201)

        taken = self.flask("users", "create", "ALICE", input=f"{PASSWORD}\n")
        self.assertNotEqual(taken.returncode, 0)
        self.assertIn("'ALICE' is taken", taken.stderr)
        self.assertNotIn("Traceback", taken.stderr)
