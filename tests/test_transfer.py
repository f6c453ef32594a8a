"""`flask --app todo todos seed|export|import`: demo data, and a backup that restores exactly."""

import os
import tempfile
import time

import orjson
import sqlalchemy as sa

from tests.base import TOKEN_MODE, AppTestCase, across_databases, bearer, empty_tables, sign_up
from todo.models import db
from todo.models.todo import Todo
from todo.schemas import TodoOut

TODOS = "/api/v1/todos"
# One valid exported todo; tests vary it line by line.
TODO = {
    "id": 1,
    "title": "Pay the electricity bill",
    "description": None,
    "completed": False,
    "deadline_at": "2026-12-01T09:00:00",
    "created_at": "2026-11-01T08:00:00",
    "updated_at": "2026-11-02T08:30:00",
}


def jsonl(*todos: dict) -> bytes:
    """Write todos as an export writes them: one JSON object a line."""
    return b"".join(orjson.dumps(todo) + b"\n" for todo in todos)


class TransferTestCase(AppTestCase):
    def flask(self, *args: str, input: bytes | None = None):
        """Run `flask --app todo ARGS` on the test's app, as the command line does."""
        with self.app.app_context():
            return self.app.test_cli_runner().invoke(args=list(args), input=input)

    def export(self) -> bytes:
        result = self.flask("todos", "export")
        self.assertEqual(result.exit_code, 0, (result.output, result.exception))
        return result.stdout_bytes

    def import_(self, data: bytes):
        return self.flask("todos", "import", "-", input=data)

    def start_over(self) -> None:
        """Go on with an empty database, as a restore into a new one would."""
        if self.database == "SQLite":
            self.tearDown()
            self.app = self.make_app()
            self.client = self.app.test_client()
        else:
            # Ids restart too: the import, not the table's past, must move them on.
            empty_tables(self.app)

    def stored(self) -> int:
        with self.app.app_context():
            return db.session.scalar(sa.select(sa.func.count()).select_from(Todo))


@across_databases
class TestBackupAndRestore(TransferTestCase):
    def make_todos(self) -> list[dict]:
        todos = [
            self.create(title="Buy milk"),
            self.create(title="Écrire à Zoë 📨", description='Ligne 1\nLigne 2 "quoted"'),
            self.create(title="Dentist", deadline_at="2027-03-04T10:00:00+10:00"),
            self.create(title="Gone soon"),
            self.create(title="Done", completed=True, deadline_at="1000-01-01"),
        ]
        self.client.patch(f"{TODOS}/{todos[0]['id']}", json={"completed": True})
        self.assertEqual(self.client.delete(f"{TODOS}/{todos[3]['id']}").status_code, 200)
        return [todo for todo in todos if todo["title"] != "Gone soon"]

    def test_export_writes_each_todo_as_the_api_does_in_id_order(self):
        todos = self.make_todos()
        lines = self.export().splitlines(keepends=True)
        self.assertEqual(len(lines), len(todos))
        for line, todo in zip(lines, todos, strict=True):
            self.assertTrue(line.endswith(b"\n"))
            self.assertEqual(line[:-1], self.client.get(f"{TODOS}/{todo['id']}").get_data())

    def test_export_then_import_into_an_empty_database_restores_byte_for_byte(self):
        self.make_todos()
        backup = self.export()
        self.start_over()
        result = self.import_(backup)
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("Imported 4 todos.", result.stdout)
        self.assertEqual(self.export(), backup)

    def test_the_next_todo_created_after_an_import_gets_the_next_id(self):
        # Ids out of order, with gaps: the next one follows the largest.
        todos = [TODO | {"id": todo_id} for todo_id in (3, 10, 7)]
        result = self.import_(jsonl(*todos))
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(self.create()["id"], 11)

    def test_import_reads_a_file(self):
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "backup.jsonl")
            with open(path, "wb") as file:
                file.write(jsonl(TODO, TODO | {"id": 2, "completed": True}))
            result = self.flask("todos", "import", path)
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(self.client.get(f"{TODOS}/1").get_json(), TODO)
        self.assertTrue(self.client.get(f"{TODOS}/2").get_json()["completed"])

    def test_an_empty_file_imports_nothing(self):
        result = self.import_(b"")
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(self.export(), b"")

    def assertRefused(self, data: bytes, *words: str) -> None:  # noqa: N802
        result = self.import_(data)
        self.assertEqual(result.exit_code, 1, result.output)
        for word in (*words, "Nothing was imported"):
            self.assertIn(word, result.stderr)
        self.assertNotIn("Traceback", result.output)

    def test_a_bad_line_is_named_and_nothing_is_imported(self):
        cases = {
            "invalid JSON": (b'{"id": 2, "title": "x",\n', "Line 2: not valid JSON"),
            "not an object": (b"[1, 2]\n", "Line 2: not a JSON object"),
            "missing title": (
                jsonl({key: value for key, value in TODO.items() if key != "title"} | {"id": 2}),
                "Line 2: title is required",
            ),
            "blank title": (jsonl(TODO | {"id": 2, "title": " "}), "Line 2: title must not be"),
            "missing field": (
                jsonl({key: value for key, value in TODO.items() if key != "updated_at"}),
                "Line 2: updated_at is required",
            ),
            "unknown field": (jsonl(TODO | {"id": 2, "owner": 1}), "Line 2: owner unknown field"),
            "string for a boolean": (
                jsonl(TODO | {"id": 2, "completed": "true"}),
                "Line 2: completed must be true or false",
            ),
            "timestamp with an offset": (
                jsonl(TODO | {"id": 2, "created_at": "2026-11-01T08:00:00Z"}),
                "Line 2: created_at must be a UTC timestamp written like 2023-02-27T00:00:00",
            ),
            "deadline as a date": (
                jsonl(TODO | {"id": 2, "deadline_at": "2026-12-01"}),
                "Line 2: deadline_at must be a UTC timestamp",
            ),
            "no such day": (
                jsonl(TODO | {"id": 2, "updated_at": "2026-02-30T00:00:00"}),
                "Line 2: updated_at is not a valid date and time",
            ),
            "id out of range": (jsonl(TODO | {"id": 0}), "Line 2: id must be at least 1"),
            "duplicate id": (jsonl(TODO), "Line 2: id 1 is already on line 1"),
        }
        for name, (line, message) in cases.items():
            with self.subTest(name):
                # The first line is good and would be imported, but for the bad one.
                self.assertRefused(jsonl(TODO) + line, message)
                self.assertEqual(self.stored(), 0)

    def test_a_bad_line_after_many_good_ones_leaves_nothing_imported(self):
        good = jsonl(*(TODO | {"id": todo_id} for todo_id in range(1, 2501)))
        self.assertRefused(good + b"nonsense\n", "Line 2501: not valid JSON")
        # The first batches were inserted before the bad line was read: rolled back.
        self.assertEqual(self.stored(), 0)

    def test_an_id_already_in_the_database_is_refused(self):
        existing = self.create(title="Mine")
        data = jsonl(*(TODO | {"id": existing["id"] + offset} for offset in (1, 0)))
        self.assertRefused(data, f"Line 2: id {existing['id']} is already in the database")
        self.assertEqual(self.stored(), 1)
        self.assertEqual(self.client.get(f"{TODOS}/{existing['id']}").get_json(), existing)

    def test_new_ids_go_into_a_database_that_has_todos(self):
        existing = self.create(title="Mine")
        result = self.import_(jsonl(TODO | {"id": 50}))
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual([todo["id"] for todo in self.client.get(TODOS).get_json()], [1, 50])
        self.assertEqual(existing["id"], 1)
        self.assertEqual(self.create()["id"], 51)

    def test_seed_makes_plausible_todos_the_api_lists(self):
        result = self.flask("todos", "seed", "300")
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertIn("Made 300 demo todos.", result.stdout)
        todos = self.client.get(TODOS).get_json()
        self.assertEqual(len(todos), 300)
        for todo in todos:
            self.assertEqual(TodoOut.model_validate(todo).model_dump(mode="json"), todo)
        self.assertGreater(len({todo["title"] for todo in todos}), 20)
        for field in ("description", "deadline_at"):
            values = {todo[field] is None for todo in todos}
            self.assertEqual(values, {True, False}, field)
        self.assertEqual({todo["completed"] for todo in todos}, {True, False})
        now = self.create()["created_at"]
        deadlines = [todo["deadline_at"] for todo in todos if todo["deadline_at"]]
        self.assertLess(min(deadlines), now)
        self.assertGreater(max(deadlines), now)
        self.assertEqual(self.create()["id"], 302)

    def test_seed_wants_a_positive_count(self):
        for count in ("0", "-1", "many"):
            with self.subTest(count):
                result = self.flask("todos", "seed", count)
                self.assertEqual(result.exit_code, 2, result.output)
        self.assertEqual(self.stored(), 0)

    def test_each_command_explains_itself(self):
        for command, words in {
            "seed": ("COUNT plausible demo todos", "todos adopt"),
            "export": ("JSON Lines", "id order"),
            "import": ("FILE (- for standard input)", "nothing is imported", "todos adopt"),
        }.items():
            with self.subTest(command):
                result = self.flask("todos", command, "--help")
                self.assertEqual(result.exit_code, 0, result.output)
                text = " ".join(result.stdout.split())
                for word in words:
                    self.assertIn(word, text)


class TestImportWithAccounts(TransferTestCase):
    config = TOKEN_MODE

    def test_imported_todos_have_no_owner_until_adopted(self):
        headers = bearer(sign_up(self.client, "alice"))
        result = self.import_(jsonl(TODO))
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(self.client.get(TODOS, headers=headers).get_json(), [])
        result = self.flask("todos", "adopt", "alice")
        self.assertEqual(result.exit_code, 0, result.output)
        self.assertEqual(self.client.get(TODOS, headers=headers).get_json(), [TODO])


class TestLargeBackup(TransferTestCase):
    """100,000 todos: seeded, exported, restored into an empty database, exported again."""

    slow = True
    count = 100_000

    def test_a_large_backup_restores_byte_for_byte(self):
        started = time.perf_counter()
        result = self.flask("todos", "seed", str(self.count))
        self.assertEqual(result.exit_code, 0, result.output)
        seeded = time.perf_counter()
        backup = self.export()
        self.assertEqual(backup.count(b"\n"), self.count)
        exported = time.perf_counter()
        self.start_over()
        result = self.import_(backup)
        self.assertEqual(result.exit_code, 0, result.output)
        imported = time.perf_counter()
        self.assertEqual(self.export(), backup)
        self.assertEqual(self.create()["id"], self.count + 1)
        # Reported, not asserted: a loaded machine must not fail the test.
        print(
            f"\n{self.database}: seed {seeded - started:.1f} s, export {exported - seeded:.1f} s,"
            f" import {imported - exported:.1f} s"
        )


class TestImportOnPostgres(TransferTestCase):
    database = "Postgres"

    def test_the_planner_knows_the_imported_todos_at_once(self):
        result = self.import_(jsonl(*(TODO | {"id": todo_id} for todo_id in range(1, 301))))
        self.assertEqual(result.exit_code, 0, result.output)
        with self.app.app_context():
            estimate = db.session.scalar(
                sa.text("SELECT reltuples FROM pg_class WHERE relname = 'todos'")
            )
        self.assertEqual(estimate, 300)


class TestLargeBackupOnPostgres(TestLargeBackup):
    database = "Postgres"
