"""Counters at the end of their range: a todo's version, and the ids a database hands out."""

from sqlalchemy import text

from tests.base import AppTestCase, across_databases
from todo.models import db
from todo.models.todo import MAX_ID, MAX_VERSION, Todo, next_version

TODOS = "/api/v1/todos"


@across_databases
class TestVersionAtItsMaximum(AppTestCase):
    """After the largest version a column can hold, a todo's version goes back to 1."""

    def at_maximum(self) -> tuple[str, int, str]:
        """Create a todo and set its version to the largest; return its URL, id and ETag."""
        todo = self.create(title="often changed")
        with self.app.app_context():
            db.session.execute(
                text("UPDATE todos SET version = :version WHERE id = :id"),
                {"version": MAX_VERSION, "id": todo["id"]},
            )
            db.session.commit()
        url = f"{TODOS}/{todo['id']}"
        return url, todo["id"], self.client.get(url).headers["ETag"]

    def test_the_todo_is_served_with_the_largest_version(self):
        url, todo_id, last = self.at_maximum()
        self.assertEqual(last, f'"{todo_id}-{MAX_VERSION}"')
        self.assertEqual(self.client.get(url, headers={"If-None-Match": last}).status_code, 304)

    def test_an_api_update_wraps_to_version_1_and_the_tags_keep_working(self):
        for precondition in ("none", "the last tag", "a list with the last tag"):
            url, todo_id, last = self.at_maximum()
            headers = {
                "none": {},
                "the last tag": {"If-Match": last},
                "a list with the last tag": {"If-Match": f'"{todo_id}-5", {last}'},
            }[precondition]
            first = f'"{todo_id}-1"'
            with self.subTest(precondition=precondition):
                response = self.client.patch(url, json={"completed": True}, headers=headers)
                self.assertEqual((response.status_code, response.headers["ETag"]), (200, first))
                self.assertEqual(self.client.get(url).headers["ETag"], first)
                stale = self.client.patch(url, json={"title": "x"}, headers={"If-Match": last})
                self.assertEqual(stale.status_code, 412)
                again = self.client.patch(url, json={"title": "y"}, headers={"If-Match": first})
                self.assertEqual(
                    (again.status_code, again.headers["ETag"]), (200, f'"{todo_id}-2"')
                )

    def test_a_delete_at_the_largest_version_works(self):
        url, _, last = self.at_maximum()
        response = self.client.delete(url, headers={"If-Match": last})
        self.assertEqual((response.status_code, response.headers["ETag"]), (200, last))

    def test_an_orm_update_wraps_to_version_1_as_the_api_does(self):
        url, todo_id, _ = self.at_maximum()
        with self.app.app_context():
            todo = db.session.get(Todo, todo_id)
            todo.title = "changed in Python"
            db.session.commit()
            self.assertEqual(todo.version, 1)
        self.assertEqual(self.client.get(url).headers["ETag"], f'"{todo_id}-1"')
        headers = {"If-Match": f'"{todo_id}-1"'}
        response = self.client.patch(url, json={"completed": True}, headers=headers)
        self.assertEqual((response.status_code, response.headers["ETag"]), (200, f'"{todo_id}-2"'))

    def test_the_orm_starts_new_todos_at_version_1(self):
        self.assertEqual([next_version(None), next_version(1)], [1, 2])
        with self.app.app_context():
            todo = Todo(title="from Python")
            db.session.add(todo)
            db.session.commit()
            self.assertEqual(todo.version, 1)


@across_databases
class TestIdsRunOut(AppTestCase):
    """When the database has handed out its largest id, a create is a 507 that changes nothing."""

    def setUp(self) -> None:
        super().setUp()
        self.first = self.create(title="first")
        with self.app.app_context():
            connection = db.session.connection()
            # The next id the database hands out is the largest it can.
            statement = {
                "sqlite": f"UPDATE sqlite_sequence SET seq = {MAX_ID - 1} WHERE name = 'todos'",
                "postgresql": f"SELECT setval(pg_get_serial_sequence('todos', 'id'), {MAX_ID - 1})",
                "mysql": f"ALTER TABLE todos AUTO_INCREMENT = {MAX_ID}",
            }[connection.dialect.name]
            connection.exec_driver_sql(statement)
            db.session.commit()

    def assertNoRoom(self, response) -> None:  # noqa: N802
        body = self.assertProblem(response, 507)
        self.assertIn("No more todos can be stored", body["detail"])
        self.assertNotIn("Retry-After", response.headers)

    def stored(self) -> tuple[list, list]:
        with self.app.app_context():
            keys = db.session.execute(text("SELECT * FROM idempotency_keys")).all()
        return self.client.get(TODOS).get_json(), keys

    def test_the_last_id_is_handed_out_and_then_creates_answer_507(self):
        last = self.create(title="last")
        self.assertEqual(last["id"], MAX_ID)
        before = self.stored()
        for _ in range(2):
            self.assertNoRoom(self.client.post(TODOS, json={"title": "one too many"}))
        self.assertEqual(self.stored(), before)

    def test_a_keyed_create_answers_507_and_remembers_nothing(self):
        self.create(title="last")
        before = self.stored()
        for _ in range(2):
            response = self.client.post(
                TODOS, json={"title": "one too many"}, headers={"Idempotency-Key": "k"}
            )
            self.assertNoRoom(response)
        self.assertEqual(self.stored(), before)

    def test_everything_but_creating_keeps_working(self):
        self.create(title="last")
        self.assertNoRoom(self.client.post(TODOS, json={"title": "one too many"}))
        url = f"{TODOS}/{self.first['id']}"
        self.assertEqual(self.client.patch(url, json={"completed": True}).status_code, 200)
        self.assertEqual(self.client.get(url).get_json()["completed"], True)
        self.assertEqual(self.client.delete(url).status_code, 200)
        self.assertEqual(self.client.get("/api/v1/health").status_code, 200)


class TestSQLiteFileFull(AppTestCase):
    """A SQLite database that cannot grow answers a create with 507, not 503."""

    def test_a_full_database_answers_507(self):
        self.create()
        with self.app.app_context():
            connection = db.session.connection()
            pages = connection.exec_driver_sql("PRAGMA page_count").scalar()
            # Per connection; in memory the app has only this one.
            connection.exec_driver_sql(f"PRAGMA max_page_count = {pages}")
            db.session.commit()
        for _ in range(1000):
            response = self.client.post(TODOS, json={"title": "x" * 80, "description": "y" * 120})
            if response.status_code != 201:
                break
        self.assertProblem(response, 507)
        self.assertNotIn("Retry-After", response.headers)
