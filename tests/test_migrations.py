"""Versioned migrations: they match the models and carry old databases forward."""

import os
import subprocess
import sys
import tempfile
import unittest

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import column, create_engine, inspect, table, text

from tests.base import DatabaseTestCase, across_databases
from todo import accounts, create_app
from todo.database import TUTORIAL_REVISION, alembic_config, current_revision, head_revision
from todo.idempotency import fingerprint
from todo.models import created_on, db, utcnow
from todo.schemas import TodoCreate


def dispose_engine(app) -> None:
    """Close an app's pooled connections, so that its database can be dropped."""
    with app.app_context():
        db.engine.dispose()


KEY_COLUMNS_BEFORE_ACCOUNTS = ("key", "fingerprint", "todo_id", "response", "created_at")
TUTORIAL_ROWS = [
    (1, "Watch CSSE6400 Lecture", "Week 1", True, "2023-02-27 00:00:00"),
    (2, "Read the notes", None, False, None),
]


# How each engine describes what it stores, beyond the columns: its indexes, with their WHERE,
# and on SQLite which tables keep their rows in their primary key's tree.
_STORAGE = {
    "sqlite": "SELECT CASE type WHEN 'table' THEN name || ' without rowid: '"
    " || (sql LIKE '%WITHOUT ROWID%') ELSE sql END FROM sqlite_master"
    " WHERE sql IS NOT NULL AND (type = 'index' OR name NOT LIKE 'sqlite%')",
    "postgresql": "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema()",
    "mysql": "SELECT CONCAT_WS(' ', table_name, index_name, seq_in_index, column_name)"
    " FROM information_schema.statistics WHERE table_schema = DATABASE()",
}


def storage(connection) -> list[str]:
    """Return what the database stores beyond its columns, one line each, in order."""
    lines = connection.execute(text(_STORAGE[connection.dialect.name])).scalars()
    return sorted(" ".join(line.lower().replace('"', "").split()) for line in lines)


@across_databases
class TestMigrations(DatabaseTestCase):
    """Each test starts on an empty database of one kind; SQLite is a temporary file."""

    def setUp(self) -> None:
        self.url = self.fresh_database_url()
        self.engine = create_engine(self.url)
        self.addCleanup(self.engine.dispose)

    def migrate(self, revision: str) -> None:
        with self.engine.begin() as connection:
            command.upgrade(alembic_config(connection), revision)

    @staticmethod
    def comparing(connection) -> dict:
        """Return the options of Alembic's comparison, as the migrations' environment sets them."""
        return {"compare_type": True, "include_object": created_on(connection.dialect.name)}

    def insert_tutorial_rows(self) -> None:
        with self.engine.begin() as connection:
            for row in TUTORIAL_ROWS:
                connection.execute(
                    text(
                        "INSERT INTO todos (id, title, description, completed, deadline_at,"
                        " created_at, updated_at) VALUES (:id, :title, :description,"
                        " :completed, :deadline, '2023-02-20 00:00:00', '2023-02-20 00:00:00')"
                    ),
                    dict(
                        zip(
                            ("id", "title", "description", "completed", "deadline"),
                            row,
                            strict=True,
                        )
                    ),
                )

    def start_app(self, **settings):
        app = create_app({"SQLALCHEMY_DATABASE_URI": self.url, "TESTING": True} | settings)
        self.addCleanup(dispose_engine, app)
        return app

    def assert_tutorial_rows_served(self, app) -> None:
        todos = app.test_client().get("/api/v1/todos").get_json()
        self.assertEqual(
            [
                (t["id"], t["title"], t["description"], t["completed"], t["deadline_at"])
                for t in todos
            ],
            [
                (1, "Watch CSSE6400 Lecture", "Week 1", True, "2023-02-27T00:00:00"),
                (2, "Read the notes", None, False, None),
            ],
        )
        self.assertEqual(todos[0]["created_at"], "2023-02-20T00:00:00")
        # Filters compare the migrated values correctly (SQLite's are rewritten as text).
        overdue = app.test_client().get("/api/v1/todos?window=0").get_json()
        self.assertEqual([todo["id"] for todo in overdue], [1])

    def test_migrations_build_exactly_the_models_schema(self):
        self.migrate("head")
        with self.engine.connect() as connection:
            context = MigrationContext.configure(connection, opts=self.comparing(connection))
            self.assertEqual(compare_metadata(context, db.metadata), [])

    def test_first_migration_upgrades_to_the_latest_with_rows_intact(self):
        self.migrate(TUTORIAL_REVISION)
        self.insert_tutorial_rows()
        app = self.start_app()
        with self.engine.connect() as connection:
            self.assertEqual(current_revision(connection), head_revision())
        self.assert_tutorial_rows_served(app)
        response = app.test_client().put(
            "/api/v1/todos/1", json={"completed": False}, headers={"If-Match": '"1-1"'}
        )
        self.assertEqual(response.status_code, 200)
        self.assertEqual(
            app.test_client().post("/api/v1/todos", json={"title": "3"}).get_json()["id"], 3
        )

    def test_todos_and_keys_from_before_accounts_have_no_owner_until_adopted(self):
        self.migrate(TUTORIAL_REVISION)
        self.insert_tutorial_rows()
        self.migrate("0003")
        # The remembered answer to a POST of todo 2 with an Idempotency-Key, as 0003 kept it.
        remembered = TodoCreate(title="Read the notes")
        keys = table("idempotency_keys", *map(column, KEY_COLUMNS_BEFORE_ACCOUNTS))
        with self.engine.begin() as connection:
            connection.execute(
                keys.insert().values(
                    key="from-before",
                    fingerprint=fingerprint(remembered),
                    todo_id=2,
                    response='{"id": 2, "title": "Read the notes"}',
                    created_at=utcnow().replace(tzinfo=None),
                )
            )
        key = {"Idempotency-Key": "from-before"}
        # Starting migrates the database to the latest revision.
        app = self.start_app(AUTH="token")
        with app.app_context():
            alice = accounts.create_user("alice", "correct horse battery")["id"]
            token = accounts.create_token(alice, None, None)["token"]
        alice_sees = {"Authorization": f"Bearer {token}"}
        client = app.test_client()
        self.assertEqual(client.get("/api/v1/todos", headers=alice_sees).json, [])
        # The key from before belongs to no user: Alice sending it creates her own todo.
        mine = client.post("/api/v1/todos", json=remembered.model_dump(), headers=key | alice_sees)
        self.assertEqual((mine.status_code, mine.json["id"]), (201, 3))

        with app.app_context():
            result = app.test_cli_runner().invoke(args=["todos", "adopt", "alice"])
        self.assertEqual(result.exit_code, 0, result.output)
        listed = client.get("/api/v1/todos", headers=alice_sees).json
        self.assertEqual([todo["id"] for todo in listed], [1, 2, 3])
        # Without accounts, the key from before still replays its first answer.
        again = (
            self.start_app()
            .test_client()
            .post("/api/v1/todos", json=remembered.model_dump(), headers=key)
        )
        self.assertEqual((again.status_code, again.json["id"]), (201, 2))
        self.assertEqual(again.headers.get("Idempotent-Replayed"), "true")

    def test_tutorial_database_without_migration_history_is_brought_up_to_date(self):
        self.migrate(TUTORIAL_REVISION)
        with self.engine.begin() as connection:
            connection.execute(text("DROP TABLE alembic_version"))
        self.insert_tutorial_rows()
        self.assert_tutorial_rows_served(self.start_app())

    def test_fresh_database_schema_matches_the_migrated_one(self):
        self.start_app()
        with self.engine.connect() as connection:
            self.assertEqual(current_revision(connection), head_revision())
            context = MigrationContext.configure(connection, opts=self.comparing(connection))
            self.assertEqual(compare_metadata(context, db.metadata), [])

    def test_fresh_database_stores_and_indexes_rows_as_the_migrated_one(self):
        # Alembic's comparison leaves out what only the engine knows: an index's WHERE, and
        # whether SQLite keeps a table's rows in its primary key's tree.
        self.migrate("head")
        with self.engine.connect() as connection:
            migrated = storage(connection)
        self.engine.dispose()
        self.url = self.fresh_database_url()
        self.engine = create_engine(self.url)
        self.addCleanup(self.engine.dispose)
        self.start_app()
        with self.engine.connect() as connection:
            fresh = storage(connection)
        self.assertEqual(migrated, fresh)
        # The users' index leaves out the todos of no one where the engine can.
        owned = [line for line in fresh if "ix_todos_owner_id_id" in line]
        partial = self.database != "MySQL"
        self.assertEqual(any("owner_id is not null" in line for line in owned), partial, owned)

    def test_downgrade_to_the_first_migration_keeps_the_rows(self):
        self.migrate("head")
        self.insert_tutorial_rows()
        with self.engine.begin() as connection:
            command.downgrade(alembic_config(connection), TUTORIAL_REVISION)
        with self.engine.connect() as connection:
            self.assertNotIn("idempotency_keys", inspect(connection).get_table_names())
            count = connection.execute(text("SELECT COUNT(*) FROM todos")).scalar_one()
        self.assertEqual(count, 2)


class TestCommandLine(unittest.TestCase):
    slow = True

    def test_flask_db_upgrade_creates_the_schema_by_hand(self):
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/db.sqlite"
            environment = os.environ | {
                "DATABASE_URL": url,
                "TODO_SCHEMA_AUTO_UPGRADE": "false",
            }
            environment.pop("TODO_SQLALCHEMY_DATABASE_URI", None)
            result = subprocess.run(
                [sys.executable, "-m", "flask", "--app", "todo", "db", "upgrade"],
                env=environment,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            self.assertEqual(result.returncode, 0, result.stderr)
            engine = create_engine(url)
            try:
                with engine.connect() as connection:
                    self.assertEqual(current_revision(connection), head_revision())
                    self.assertIn("todos", inspect(connection).get_table_names())
            finally:
                engine.dispose()
