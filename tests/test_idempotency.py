"""Idempotency-Key on POST: retries replay the first answer and create nothing more."""

from datetime import timedelta

from sqlalchemy import update

from tests.base import AppTestCase, across_databases
from todo.idempotency import purge_expired_keys
from todo.models import db, utcnow
from todo.models.idempotency import IdempotencyKey

TODOS = "/api/v1/todos"


@across_databases
class TestIdempotentCreate(AppTestCase):
    def post(self, body: dict, key: str = "key-1"):
        return self.client.post(TODOS, json=body, headers={"Idempotency-Key": key})

    def test_retry_replays_the_first_answer_and_creates_nothing(self):
        first = self.post({"title": "once", "deadline_at": "2023-02-27"})
        self.client.put("/api/v1/todos/1", json={"title": "changed since"})
        retry = self.post({"title": "once", "deadline_at": "2023-02-27"})
        self.assertEqual((first.status_code, retry.status_code), (201, 201))
        self.assertEqual(retry.get_json(), first.get_json())
        for header in ("Location", "ETag"):
            self.assertEqual(retry.headers[header], first.headers[header])
        self.assertEqual(retry.headers["Idempotent-Replayed"], "true")
        self.assertNotIn("Idempotent-Replayed", first.headers)
        self.assertEqual(self.count_todos(), 1)

    def test_same_meaning_counts_as_the_same_body(self):
        first = self.post({"title": "once"})
        retry = self.post({"completed": False, "title": "once", "deadline_at": None})
        self.assertEqual(retry.get_json()["id"], first.get_json()["id"])
        self.assertEqual(self.count_todos(), 1)

    def test_same_key_with_another_body_answers_422_and_creates_nothing(self):
        self.post({"title": "first"})
        self.assertProblem(self.post({"title": "second"}), 422)
        self.assertEqual(self.count_todos(), 1)

    def test_different_keys_create_different_todos(self):
        self.assertNotEqual(
            self.post({"title": "same"}, key="a").get_json()["id"],
            self.post({"title": "same"}, key="b").get_json()["id"],
        )

    def test_keys_are_case_sensitive(self):
        self.post({"title": "x"}, key="Key")
        self.assertEqual(self.post({"title": "x"}, key="key").status_code, 201)
        self.assertEqual(self.count_todos(), 2)

    def test_invalid_body_does_not_use_up_the_key(self):
        self.assertProblem(self.post({"title": ""}), 400, "title")
        self.assertEqual(self.post({"title": "valid"}).status_code, 201)

    def test_longest_key_is_accepted(self):
        self.assertEqual(self.post({"title": "x"}, key="k" * 255).status_code, 201)


class TestMalformedKeys(AppTestCase):
    """A key is checked before the database is asked, so this runs on SQLite only."""

    def test_malformed_keys_answer_400_and_create_nothing(self):
        for key in ("", " ", " padded", "x" * 256, "tab\there", "naïve"):
            with self.subTest(key=key):
                response = self.client.post(
                    TODOS,
                    json={"title": "x"},
                    headers=[("Idempotency-Key", key.encode().decode("latin-1"))],
                )
                self.assertProblem(response, 400, "Idempotency-Key")
        self.assertEqual(self.count_todos(), 0)


@across_databases
class TestExpiredKeys(AppTestCase):
    def setUp(self) -> None:
        super().setUp()
        for key in ("a", "b"):
            self.client.post(TODOS, json={"title": key}, headers={"Idempotency-Key": key})
        self.age_keys(timedelta(hours=24, seconds=1))

    def age_keys(self, age: timedelta) -> None:
        """Make every remembered key as old as `age`, as if that much time had passed."""
        with self.app.app_context():
            db.session.execute(update(IdempotencyKey).values(created_at=utcnow() - age))
            db.session.commit()

    def test_key_older_than_24_hours_creates_anew(self):
        again = self.client.post(TODOS, json={"title": "new"}, headers={"Idempotency-Key": "a"})
        self.assertEqual(again.status_code, 201)
        self.assertNotIn("Idempotent-Replayed", again.headers)
        self.assertEqual(again.get_json()["title"], "new")
        self.assertEqual(self.count_todos(), 3)

    def test_purge_deletes_expired_keys_and_keeps_the_todos(self):
        with self.app.app_context():
            self.assertEqual(purge_expired_keys(), 2)
            remaining = db.session.execute(db.select(IdempotencyKey)).scalars().all()
        self.assertEqual(remaining, [])
        self.assertEqual(self.count_todos(), 2)


@across_databases
class TestKeptKeys(AppTestCase):
    def test_purge_keeps_keys_younger_than_24_hours(self):
        self.client.post(TODOS, json={"title": "a"}, headers={"Idempotency-Key": "k"})
        with self.app.app_context():
            db.session.execute(
                update(IdempotencyKey).values(created_at=utcnow() - timedelta(hours=23, minutes=59))
            )
            db.session.commit()
        with self.app.app_context():
            self.assertEqual(purge_expired_keys(), 0)
        retry = self.client.post(TODOS, json={"title": "a"}, headers={"Idempotency-Key": "k"})
        self.assertEqual(retry.headers.get("Idempotent-Replayed"), "true")
