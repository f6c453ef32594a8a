"""ETags, If-None-Match and If-Match: caching and lost-update protection for one todo."""

from tests.base import AppTestCase, across_databases

TODO = "/api/v1/todos/1"


@across_databases
class TestETags(AppTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.created = self.client.post("/api/v1/todos", json={"title": "tagged"})

    def test_every_single_todo_response_carries_a_strong_etag(self):
        responses = {
            "POST": self.created,
            "GET": self.client.get(TODO),
            "PUT": self.client.put(TODO, json={"completed": True}),
            "PATCH": self.client.patch(TODO, json={"title": "again"}),
            "DELETE": self.client.delete(TODO),
        }
        for method, response in responses.items():
            with self.subTest(method=method):
                self.assertRegex(response.headers["ETag"], r'^"[^"]+"$')
        # The deleted todo is answered as it was, with the tag it had.
        self.assertEqual(responses["DELETE"].headers["ETag"], responses["PATCH"].headers["ETag"])

    def test_etag_changes_with_every_change_and_only_then(self):
        first = self.client.get(TODO).headers["ETag"]
        self.assertEqual(self.created.headers["ETag"], first)
        self.assertEqual(self.client.put(TODO, json={}).headers["ETag"], first)
        second = self.client.put(TODO, json={"completed": True}).headers["ETag"]
        third = self.client.patch(TODO, json={"completed": True}).headers["ETag"]
        self.assertEqual(len({first, second, third}), 3)
        self.assertEqual(self.client.get(TODO).headers["ETag"], third)

    def test_etags_of_different_todos_differ(self):
        other = self.client.post("/api/v1/todos", json={"title": "other"})
        self.assertNotEqual(other.headers["ETag"], self.created.headers["ETag"])


@across_databases
class TestIfNoneMatch(AppTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tag = self.client.post("/api/v1/todos", json={"title": "cached"}).headers["ETag"]

    def test_current_tag_answers_304_without_a_body(self):
        for header in (self.tag, f"W/{self.tag}", f'"0-0", {self.tag}', "*"):
            with self.subTest(header=header):
                response = self.client.get(TODO, headers={"If-None-Match": header})
                self.assertEqual(response.status_code, 304)
                self.assertEqual(response.headers["ETag"], self.tag)
                self.assertEqual(response.get_data(), b"")

    def test_stale_tag_answers_the_todo(self):
        self.client.put(TODO, json={"title": "changed"})
        response = self.client.get(TODO, headers={"If-None-Match": self.tag})
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.get_json()["title"], "changed")

    def test_missing_todo_is_still_404(self):
        response = self.client.get("/api/v1/todos/2", headers={"If-None-Match": "*"})
        self.assertProblem(response, 404)


@across_databases
class TestIfMatch(AppTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.tag = self.client.post("/api/v1/todos", json={"title": "guarded"}).headers["ETag"]
        self.client.put(TODO, json={"title": "changed by someone else"})
        self.current = self.client.get(TODO)

    def send(self, method: str, tag: str, body: dict | None = None):
        return self.client.open(TODO, method=method, json=body, headers={"If-Match": tag})

    def test_stale_tag_answers_412_and_changes_nothing(self):
        for method, body in (
            ("PUT", {"title": "mine"}),
            ("PATCH", {"title": "mine"}),
            ("PUT", {}),
            ("DELETE", None),
        ):
            with self.subTest(method=method, body=body):
                self.assertProblem(self.send(method, self.tag, body), 412)
                after = self.client.get(TODO)
                self.assertEqual(after.get_json(), self.current.get_json())
                self.assertEqual(after.headers["ETag"], self.current.headers["ETag"])

    def test_weak_tags_and_tags_of_other_todos_never_match(self):
        current = self.current.headers["ETag"]
        for tag in (f"W/{current}", '"2-2"', '"garbage"'):
            with self.subTest(tag=tag):
                self.assertProblem(self.send("PATCH", tag, {"title": "mine"}), 412)

    def test_tags_with_numbers_no_todo_can_have_are_412_not_errors(self):
        for tag in (
            '"1-99999999999999999999"',
            '"1-2147483648"',
            '"99999999999999999999-1"',
            '"1-' + "9" * 5000 + '"',
        ):
            for method, body in (("PUT", {"title": "mine"}), ("DELETE", None)):
                with self.subTest(tag=tag[:30], method=method):
                    self.assertProblem(self.send(method, tag, body), 412)
        self.assertEqual(self.client.get(TODO).get_json(), self.current.get_json())

    def test_current_tag_lets_the_update_through(self):
        response = self.send("PATCH", self.current.headers["ETag"], {"title": "mine"})
        self.assertEqual((response.status_code, response.get_json()["title"]), (200, "mine"))

    def test_any_listed_tag_or_star_matches(self):
        listed = f"{self.tag}, {self.current.headers['ETag']}"
        self.assertEqual(self.send("PUT", listed, {"completed": True}).status_code, 200)
        self.assertEqual(self.send("PUT", "*", {"completed": False}).status_code, 200)

    def test_current_tag_lets_the_delete_through(self):
        response = self.send("DELETE", self.current.headers["ETag"])
        self.assertEqual(response.status_code, 200)
        self.assertProblem(self.client.get(TODO), 404)

    def test_missing_todo_keeps_its_usual_answers(self):
        self.client.delete(TODO)
        self.assertProblem(self.send("PUT", self.tag, {"title": "x"}), 404)
        response = self.send("DELETE", self.tag)
        self.assertEqual((response.status_code, response.get_json()), (200, {}))
