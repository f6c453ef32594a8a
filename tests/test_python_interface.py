"""Code written for the classic tutorial keeps working against the models."""

from datetime import UTC, datetime

from tests.base import AppTestCase, across_databases
from todo.models import db
from todo.models.todo import Todo


@across_databases
class TestTutorialInterface(AppTestCase):
    def add_tutorial_todo(self) -> None:
        with self.app.app_context():
            db.session.add(
                Todo(
                    id=1,
                    title="Watch CSSE6400 Lecture",
                    description="Watch the CSSE6400 lecture on ECHO360 for week 1",
                    completed=True,
                    deadline_at=datetime(2023, 2, 27),
                )
            )
            db.session.commit()

    def test_todo_added_through_the_session_is_served_by_the_api(self):
        self.add_tutorial_todo()
        response = self.client.get("/api/v1/todos/1")
        self.assertEqual(response.status_code, 200)
        self.assertDictContainsSubset(
            {
                "id": 1,
                "title": "Watch CSSE6400 Lecture",
                "completed": True,
                "deadline_at": "2023-02-27T00:00:00",
            },
            response.get_json(),
        )

    def test_naive_datetime_is_taken_as_utc_and_read_back_aware(self):
        self.add_tutorial_todo()
        with self.app.app_context():
            todo = db.session.get(Todo, 1)
            db.session.refresh(todo)
            self.assertEqual(todo.deadline_at, datetime(2023, 2, 27, tzinfo=UTC))

    def test_api_continues_ids_after_explicit_ones(self):
        self.add_tutorial_todo()
        self.assertEqual(self.create()["id"], 2)

    def test_change_through_the_orm_changes_the_etag(self):
        self.add_tutorial_todo()
        before = self.client.get("/api/v1/todos/1").headers["ETag"]
        with self.app.app_context():
            db.session.get(Todo, 1).title = "Changed in Python"
            db.session.commit()
        response = self.client.get("/api/v1/todos/1", headers={"If-None-Match": before})
        self.assertEqual(response.status_code, 200)
        self.assertNotEqual(response.headers["ETag"], before)
        self.assertEqual(response.get_json()["title"], "Changed in Python")

    def test_todo_created_through_the_api_is_readable_as_a_model(self):
        self.create(title="From the API", deadline_at="2023-02-27T10:00:00+10:00")
        with self.app.app_context():
            todo = db.session.execute(db.select(Todo)).scalar_one()
            self.assertEqual(todo.title, "From the API")
            self.assertEqual(todo.deadline_at, datetime(2023, 2, 27, tzinfo=UTC))
            self.assertFalse(todo.completed)

    def test_session_rollback_undoes_its_writes(self):
        self.create(title="Kept")
        with self.app.app_context():
            db.session.add(Todo(title="Never committed"))
            db.session.get(Todo, 1).title = "Changed, then rolled back"
            db.session.flush()
            db.session.rollback()
        titles = [todo["title"] for todo in self.client.get("/api/v1/todos").get_json()]
        self.assertEqual(titles, ["Kept"])
