"""The todo endpoints doing their job: create, read, list, update and delete."""

import re

from tests.base import AppTestCase, across_databases

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$")
TODO = {
    "title": "Watch CSSE6400 Lecture",
    "description": "Watch the CSSE6400 lecture on ECHO360 for week 1",
    "completed": True,
    "deadline_at": "2023-02-27T00:00:00",
}


@across_databases
class TestCreate(AppTestCase):
    def test_create_answers_201_with_the_todo_and_its_location(self):
        response = self.client.post("/api/v1/todos", json=TODO)
        self.assertEqual(response.status_code, 201)
        body = response.get_json()
        self.assertDictContainsSubset({"id": 1, **TODO}, body)
        self.assertEqual(response.headers["Location"], "/api/v1/todos/1")
        self.assertEqual(set(body), {"id", *TODO, "created_at", "updated_at"})

    def test_only_title_is_required_and_the_rest_defaults(self):
        body = self.create(title="Just a title")
        self.assertDictContainsSubset(
            {"title": "Just a title", "description": None, "completed": False, "deadline_at": None},
            body,
        )

    def test_timestamps_are_utc_without_offset_or_fraction(self):
        body = self.create()
        self.assertRegex(body["created_at"], TIMESTAMP)
        self.assertEqual(body["created_at"], body["updated_at"])

    def test_created_todo_is_stored(self):
        created = self.create(**TODO)
        self.assertEqual(self.client.get("/api/v1/todos/1").get_json(), created)

    def test_ids_count_up_from_one_and_are_not_reused_after_delete(self):
        self.assertEqual([self.create()["id"] for _ in range(3)], [1, 2, 3])
        self.client.delete("/api/v1/todos/3")
        self.assertEqual(self.create()["id"], 4)

    def test_text_is_stored_exactly_with_case_accents_and_emoji(self):
        title = "Ünïcødé ÄÖÜ café 🎉 中文 MiXeD"
        description = "x" * 119 + "é"
        body = self.create(title=title, description=description)
        stored = self.client.get(f"/api/v1/todos/{body['id']}").get_json()
        self.assertEqual((stored["title"], stored["description"]), (title, description))

    def test_longest_allowed_values_are_accepted(self):
        body = self.create(title="t" * 80, description="d" * 120)
        self.assertEqual((len(body["title"]), len(body["description"])), (80, 120))


@across_databases
class TestDeadlines(AppTestCase):
    def deadline(self, sent: str) -> str:
        return self.create(deadline_at=sent)["deadline_at"]

    def test_deadline_round_trips_exactly(self):
        self.assertEqual(self.deadline("2023-02-27T00:00:00"), "2023-02-27T00:00:00")

    def test_date_means_midnight(self):
        self.assertEqual(self.deadline("2023-02-27"), "2023-02-27T00:00:00")

    def test_offset_is_converted_to_utc(self):
        self.assertEqual(self.deadline("2023-02-27T10:00:00+10:00"), "2023-02-27T00:00:00")
        self.assertEqual(self.deadline("2023-02-26T20:00:00-04:00"), "2023-02-27T00:00:00")
        self.assertEqual(self.deadline("2023-02-27T00:00:00Z"), "2023-02-27T00:00:00")

    def test_fraction_is_truncated(self):
        self.assertEqual(self.deadline("2023-02-27T00:00:00.999999"), "2023-02-27T00:00:00")
        self.assertEqual(self.deadline("2023-02-27T00:00:59.5Z"), "2023-02-27T00:00:59")

    def test_extremes_of_the_range_are_accepted(self):
        self.assertEqual(self.deadline("1000-01-01T00:00:00"), "1000-01-01T00:00:00")
        self.assertEqual(self.deadline("9999-12-31T23:59:59"), "9999-12-31T23:59:59")
        self.assertEqual(self.deadline("1000-01-01T10:00:00+10:00"), "1000-01-01T00:00:00")

    def test_a_day_before_1000_that_an_offset_brings_into_range_is_accepted(self):
        self.assertEqual(self.deadline("0999-12-31T23:00:00-02:00"), "1000-01-01T01:00:00")

    def test_null_deadline_is_none(self):
        self.assertIsNone(self.create(deadline_at=None)["deadline_at"])


@across_databases
class TestRead(AppTestCase):
    def test_get_answers_the_todo(self):
        created = self.create(**TODO)
        response = self.client.get("/api/v1/todos/1")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.get_json(), created)

    def test_get_missing_todo_answers_404(self):
        self.assertProblem(self.client.get("/api/v1/todos/1"), 404)

    def test_ids_that_cannot_exist_answer_404(self):
        for todo_id in (
            "0",
            "-1",
            "2147483648",
            "9223372036854775807",
            "9223372036854775808",
            "99999999999999999999999999",
            "abc",
            "1.5",
            "%20",
            "１",
        ):
            with self.subTest(todo_id=todo_id):
                self.assertProblem(self.client.get(f"/api/v1/todos/{todo_id}"), 404)


@across_databases
class TestUpdate(AppTestCase):
    def test_put_changes_only_the_fields_sent(self):
        self.create(**TODO)
        response = self.client.put("/api/v1/todos/1", json={"completed": False})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.get_json(), self.client.get("/api/v1/todos/1").get_json())
        self.assertDictContainsSubset({**TODO, "completed": False}, response.get_json())

    def test_patch_is_the_same_partial_update(self):
        self.create(**TODO)
        response = self.client.patch("/api/v1/todos/1", json={"title": "New"})
        self.assertEqual(response.status_code, 200)
        self.assertDictContainsSubset({**TODO, "title": "New"}, response.get_json())

    def test_null_clears_description_and_deadline(self):
        self.create(**TODO)
        body = self.client.put(
            "/api/v1/todos/1", json={"description": None, "deadline_at": None}
        ).get_json()
        self.assertDictContainsSubset({"description": None, "deadline_at": None}, body)
        self.assertEqual(self.client.get("/api/v1/todos/1").get_json(), body)

    def test_empty_update_changes_nothing(self):
        created = self.create(**TODO)
        response = self.client.put("/api/v1/todos/1", json={})
        self.assertEqual((response.status_code, response.get_json()), (200, created))

    def test_update_of_missing_todo_answers_404_and_creates_nothing(self):
        for method in (self.client.put, self.client.patch):
            with self.subTest(method=method):
                self.assertProblem(method("/api/v1/todos/7", json={"title": "x"}), 404)
                self.assertProblem(method("/api/v1/todos/0", json={}), 404)
                self.assertProblem(method("/api/v1/todos/99999999999999999999", json={}), 404)
        self.assertEqual(self.count_todos(), 0)

    def test_created_at_stays_and_id_stays(self):
        created = self.create(**TODO)
        body = self.client.put("/api/v1/todos/1", json={"title": "Changed"}).get_json()
        self.assertEqual((body["id"], body["created_at"]), (1, created["created_at"]))
        self.assertGreaterEqual(body["updated_at"], created["updated_at"])


@across_databases
class TestDelete(AppTestCase):
    def test_delete_answers_the_deleted_todo_and_removes_it(self):
        created = self.create(**TODO)
        response = self.client.delete("/api/v1/todos/1")
        self.assertEqual((response.status_code, response.get_json()), (200, created))
        self.assertProblem(self.client.get("/api/v1/todos/1"), 404)

    def test_delete_of_missing_todo_answers_200_with_empty_object(self):
        for todo_id in ("1", "0", "-3", "abc", "99999999999999999999999"):
            with self.subTest(todo_id=todo_id):
                response = self.client.delete(f"/api/v1/todos/{todo_id}")
                self.assertEqual((response.status_code, response.get_json()), (200, {}))
                self.assertEqual(response.mimetype, "application/json")

    def test_delete_twice_is_idempotent(self):
        self.create()
        self.client.delete("/api/v1/todos/1")
        self.assertEqual(self.client.delete("/api/v1/todos/1").get_json(), {})

    def test_delete_leaves_other_todos(self):
        self.create(title="keep")
        self.create(title="drop")
        self.client.delete("/api/v1/todos/2")
        self.assertEqual(
            [t["title"] for t in self.client.get("/api/v1/todos").get_json()], ["keep"]
        )


@across_databases
class TestHealth(AppTestCase):
    def test_health_answers_ok(self):
        response = self.client.get("/api/v1/health")
        self.assertEqual((response.status_code, response.get_json()), (200, {"status": "ok"}))
