"""Hostile request bodies: every one is a clear 4xx problem and changes nothing."""

import gzip
import io
import json
from typing import Any

from tests.base import AppTestCase, across_databases

TODOS = "/api/v1/todos"
TODO = {
    "title": "Watch CSSE6400 Lecture",
    "description": "Watch the CSSE6400 lecture on ECHO360 for week 1",
    "completed": False,
    "deadline_at": "2023-02-27T00:00:00",
}
WRITES = (("POST", TODOS), ("PUT", f"{TODOS}/1"), ("PATCH", f"{TODOS}/1"))
UPDATES = WRITES[1:]
JSON = "application/json"
OUT_OF_RANGE = "must be between 1000-01-01T00:00:00 and 9999-12-31T23:59:59 UTC"
WRONG_TYPES = (1, 1.5, True, [], ["a"], {}, {"a": 1})


class BadInputTestCase(AppTestCase):
    """One stored todo, and checks that a rejected request leaves everything as it was.

    A body is checked before any query, so these run on SQLite only; the accepted values at
    the edges, which do reach the database, are tested on every engine in test_todos.py.
    """

    def setUp(self) -> None:
        super().setUp()
        self.stored = self.create(**TODO)

    def state(self) -> tuple[Any, Any, str | None]:
        """Return what a client can see of the data: the list, and todo 1 with its ETag."""
        one = self.client.get(f"{TODOS}/1")
        return self.client.get(TODOS).get_json(), one.get_json(), one.headers.get("ETag")

    def send(self, method: str, path: str, body: Any = None, **kwargs: Any):
        """Send raw bytes, or a value encoded as JSON, as application/json."""
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        kwargs.setdefault("content_type", JSON)
        return self.client.open(path, method=method, data=data, **kwargs)

    def assertRejected(self, status: int, method: str, path: str, body: Any = None, **kwargs):  # noqa: N802
        """Assert a problem answer with `status` that changes nothing; return the problem."""
        before = self.state()
        response = self.send(method, path, body, **kwargs)
        problem = self.assertProblem(response, status)
        self.assertNotIn(b"<", response.data)
        self.assertEqual(self.state(), before)
        return problem

    def assertInvalidFields(self, method: str, path: str, body: Any, expected: dict[str, str]):  # noqa: N802
        """Assert a 400 whose errors give exactly these messages, field by field."""
        problem = self.assertRejected(400, method, path, body)
        for error in problem["errors"]:
            self.assertEqual(set(error), {"field", "message"})
        messages = {error["field"]: error["message"] for error in problem["errors"]}
        self.assertEqual(messages, expected)
        for field in expected:
            self.assertIn(field, problem["detail"])
        return problem

    def assertFieldRejected(self, body: Any, field: str, methods=WRITES):  # noqa: N802
        """Assert that every write method answers 400 naming only `field`."""
        for method, path in methods:
            with self.subTest(method=method, body=body):
                problem = self.assertRejected(400, method, path, body)
                self.assertEqual([error["field"] for error in problem["errors"]], [field])
                self.assertIn(field, problem["detail"])


class TestFieldsThatCannotBeSent(BadInputTestCase):
    def test_read_only_fields_are_named_as_not_settable(self):
        for field, value in (("id", 7), ("created_at", "2023-01-01T00:00:00"), ("updated_at", 1)):
            for method, path in WRITES:
                with self.subTest(field=field, method=method):
                    self.assertInvalidFields(
                        method, path, {"title": "x", field: value}, {field: "cannot be set"}
                    )

    def test_unknown_and_misspelt_fields_are_named(self):
        for field in ("extra", "Title", "titel", "complete", "deadline", "description ", ""):
            for method, path in WRITES:
                with self.subTest(field=field, method=method):
                    self.assertInvalidFields(
                        method, path, {"title": "x", field: "y"}, {field: "unknown field"}
                    )

    def test_every_offending_field_is_named_at_once(self):
        body = {"title": "x", "extra": {"a": 1}, "id": 5, "created_at": None}
        for method, path in WRITES:
            with self.subTest(method=method):
                problem = self.assertInvalidFields(
                    method,
                    path,
                    body,
                    {
                        "created_at": "cannot be set",
                        "extra": "unknown field",
                        "id": "cannot be set",
                    },
                )
                self.assertEqual(
                    problem["detail"],
                    "The request body has fields that cannot be set: created_at, extra, id",
                )
                self.assertEqual(
                    [e["field"] for e in problem["errors"]], ["created_at", "extra", "id"]
                )

    def test_unknown_fields_are_named_alongside_invalid_values(self):
        self.assertInvalidFields(
            "POST",
            TODOS,
            {"title": "", "completed": "true", "id": 1, "extra": 1},
            {
                "completed": "must be true or false",
                "extra": "unknown field",
                "id": "cannot be set",
                "title": "must be at least 1 character(s) long",
            },
        )


class TestTitle(BadInputTestCase):
    def test_missing_title_on_create_is_required(self):
        for body in ({}, {"description": "no title"}, {"completed": True}):
            with self.subTest(body=body):
                self.assertInvalidFields("POST", TODOS, body, {"title": "is required"})

    def test_empty_and_blank_titles_are_rejected(self):
        for title in ("", " ", "   ", "\t", "\n\r", "\u3000", "\u00a0 \u2003"):
            self.assertFieldRejected({"title": title}, "title")

    def test_titles_with_a_nul_character_are_rejected(self):
        for title in ("\x00", "a\x00b", "Watch\x00", "\x00" * 80):
            self.assertFieldRejected({"title": title}, "title")
        self.assertInvalidFields(
            "POST", TODOS, {"title": "a\x00"}, {"title": "must not contain the NUL character"}
        )

    def test_titles_longer_than_80_characters_are_rejected(self):
        for title in ("t" * 81, "é" * 81, "🎉" * 81, "t" * 10_000):
            self.assertFieldRejected({"title": title}, "title")
        self.assertInvalidFields(
            "PUT",
            f"{TODOS}/1",
            {"title": "t" * 81},
            {"title": "must be at most 80 characters long"},
        )

    def test_titles_that_are_not_strings_are_rejected(self):
        for title in (*WRONG_TYPES, 0, 10**30, None):
            self.assertFieldRejected({"title": title}, "title")
        self.assertInvalidFields("POST", TODOS, {"title": 5}, {"title": "must be a string"})

    def test_null_title_cannot_clear_it_on_update(self):
        for method, path in UPDATES:
            with self.subTest(method=method):
                self.assertInvalidFields(
                    method, path, {"title": None}, {"title": "must be a string"}
                )


class TestCompleted(BadInputTestCase):
    def test_only_json_booleans_are_accepted(self):
        for value in ("true", "false", "True", 1, 0, 1.0, 0.0, None, "", "yes", [], {}):
            self.assertFieldRejected({"title": "x", "completed": value}, "completed")

    def test_the_message_asks_for_true_or_false(self):
        self.assertInvalidFields(
            "PATCH", f"{TODOS}/1", {"completed": "true"}, {"completed": "must be true or false"}
        )


class TestDescription(BadInputTestCase):
    def test_descriptions_longer_than_120_characters_are_rejected(self):
        for description in ("d" * 121, "é" * 121, "🎉" * 121, "d" * 60_000):
            self.assertFieldRejected({"title": "x", "description": description}, "description")
        self.assertInvalidFields(
            "POST",
            TODOS,
            {"title": "x", "description": "d" * 121},
            {"description": "must be at most 120 characters long"},
        )

    def test_descriptions_with_a_nul_character_are_rejected(self):
        for description in ("\x00", "line\x00break"):
            self.assertFieldRejected({"title": "x", "description": description}, "description")

    def test_descriptions_that_are_not_strings_are_rejected(self):
        for description in WRONG_TYPES:
            self.assertFieldRejected({"title": "x", "description": description}, "description")
        self.assertInvalidFields(
            "PUT", f"{TODOS}/1", {"description": 7}, {"description": "must be a string"}
        )


class TestDeadline(BadInputTestCase):
    def test_malformed_deadlines_are_rejected(self):
        for deadline in (
            "",
            " ",
            "tomorrow",
            "2023/02/27",
            "27-02-2023",
            "2023-2-7",
            "23-02-27",
            "2023-02-27T",
            "2023-02-27T00",
            "2023-02-27T00:00:00+1",
            "2023-02-27T00:00:00 UTC",
            "2023-02-27T00:00:00Z ",
            " 2023-02-27",
            "2023-02-27\x00",
            "\u0662\u0660\u0662\u0663-02-27",
            "２０２３-02-27",
        ):
            self.assertFieldRejected({"title": "x", "deadline_at": deadline}, "deadline_at")

    def test_impossible_dates_and_times_are_rejected(self):
        for deadline in (
            "2023-02-29",
            "2023-02-30",
            "2023-13-01",
            "2023-00-10",
            "2023-04-31",
            "2023-02-27T24:00:00",
            "2023-02-27T23:60:00",
            "2023-02-27T23:59:60",
            "2023-02-27T00:00:00+24:00",
            "2023-02-27T00:00:00+99:99",
            "2023-02-27T10:00:00+10:60",
            "2023-02-27T10:00:00+1099",
            "0000-01-01",
        ):
            self.assertFieldRejected({"title": "x", "deadline_at": deadline}, "deadline_at")

    def test_deadlines_outside_the_range_in_utc_are_rejected(self):
        for deadline in (
            "0999-12-31T23:59:59",
            "0001-01-01",
            "0001-01-01T00:00:00+01:00",
            "1000-01-01T00:00:00+01:00",
            "1000-01-01T00:59:59+01:00",
            "9999-12-31T23:00:00-02:00",
            "9999-12-31T23:59:59-00:01",
        ):
            self.assertFieldRejected({"title": "x", "deadline_at": deadline}, "deadline_at")
            self.assertInvalidFields(
                "POST",
                TODOS,
                {"title": "x", "deadline_at": deadline},
                {"deadline_at": OUT_OF_RANGE},
            )

    def test_years_past_9999_are_rejected(self):
        for deadline in ("10000-01-01", "+10000-01-01T00:00:00"):
            self.assertFieldRejected({"title": "x", "deadline_at": deadline}, "deadline_at")

    def test_deadlines_that_are_not_strings_are_rejected(self):
        for deadline in (*WRONG_TYPES, 20230227, 1677456000):
            self.assertFieldRejected({"title": "x", "deadline_at": deadline}, "deadline_at")


class TestBodyThatIsNotJson(BadInputTestCase):
    NOT_JSON = (
        b"NaN",
        b'{"title": NaN}',
        b'{"title": "x", "completed": Infinity}',
        b'{"title": -Infinity}',
        b'{"title": 1e400}',
        b'{"title": "\\ud800"}',
        b'{"title": "\\udc00 lone low"}',
        b'{"title": "\\ud800\\u0041"}',
        b'{"title": "\xff"}',
        b'{"title": "\xc3"}',
        b'{"title": "\xc0\xaf"}',
        b'{"title": "\xed\xa0\x80"}',
        b"\xef\xbb\xbf" + b'{"title": "BOM"}',
        '{"title": "utf-16"}'.encode("utf-16"),
        b"[" * 5000 + b"]" * 5000,
        b'{"title": "x", "extra": ' + b'{"a": ' * 5000 + b"1" + b"}" * 5000 + b"}",
        b'{"title": "x"} x',
        b'{"title": "x"}{"title": "y"}',
        b'{"title": "x"},',
        b"",
        b"   ",
        b"{",
        b'{"title": "x",}',
        b"{'title': 'x'}",
        b"{title: 'x'}",
        b'{"title": "x" // comment\n}',
        b'{"title": "tab\tinside"}',
        b"\x00",
    )

    def test_bodies_that_are_not_valid_json_answer_400(self):
        for body in self.NOT_JSON:
            for method, path in WRITES:
                with self.subTest(method=method, body=body[:40]):
                    problem = self.assertRejected(400, method, path, body)
                    self.assertIn("not valid JSON", problem["detail"])

    def test_json_that_is_not_an_object_answers_400(self):
        for body in (b"[]", b'[{"title": "x"}]', b'"title"', b"1", b"-0.5", b"null", b"true"):
            for method, path in WRITES:
                with self.subTest(method=method, body=body):
                    problem = self.assertRejected(400, method, path, body)
                    self.assertEqual(problem["detail"], "The request body must be a JSON object")

    def test_duplicate_keys_take_the_last_value(self):
        response = self.send("POST", TODOS, b'{"title": 5, "title": "the last one"}')
        self.assertEqual(response.status_code, 201)
        self.assertEqual(response.get_json()["title"], "the last one")


class TestContentType(BadInputTestCase):
    def test_bodies_not_declared_as_utf8_json_answer_415(self):
        body = json.dumps({"title": "x"}).encode()
        for content_type in (
            None,
            "",
            "text/plain",
            "text/json",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/octet-stream",
            "application/jsonx",
            "application/json; charset=latin-1",
            "application/json; charset=utf-16",
        ):
            for method, path in WRITES:
                with self.subTest(method=method, content_type=content_type):
                    problem = self.assertRejected(
                        415, method, path, body, content_type=content_type
                    )
                    self.assertIn("application/json", problem["detail"])

    def test_form_data_answers_415(self):
        for method, path in WRITES:
            with self.subTest(method=method):
                before = self.state()
                response = self.client.open(path, method=method, data={"title": "x"})
                self.assertProblem(response, 415)
                self.assertEqual(self.state(), before)

    def test_compressed_bodies_answer_415(self):
        body = gzip.compress(json.dumps({"title": "x"}).encode())
        for method, path in WRITES:
            with self.subTest(method=method):
                before = self.state()
                response = self.client.open(
                    path,
                    method=method,
                    data=body,
                    content_type="application/json",
                    headers={"Content-Encoding": "gzip"},
                )
                problem = self.assertProblem(response, 415)
                self.assertIn("Content-Encoding", problem["detail"])
                self.assertEqual(self.state(), before)

    def test_json_declared_as_utf8_is_accepted(self):
        for content_type in ("application/json; charset=utf-8", "application/json; charset=UTF-8"):
            with self.subTest(content_type=content_type):
                response = self.send("POST", TODOS, {"title": "x"}, content_type=content_type)
                self.assertEqual(response.status_code, 201)


def padded_body(size: int) -> bytes:
    """Return a valid create body of exactly `size` bytes, padded with JSON whitespace."""
    body = json.dumps({"title": "padded"}).encode()
    return body + b" " * (size - len(body))


class TestBodySize(BadInputTestCase):
    LIMIT = 64 * 1024

    def send(self, method: str, path: str, body: Any = None, **kwargs: Any):
        # A streamed body is sent as it is, without Content-Length.
        if "input_stream" in kwargs:
            kwargs.setdefault("content_type", JSON)
            return self.client.open(path, method=method, **kwargs)
        return super().send(method, path, body, **kwargs)

    def test_body_of_exactly_the_limit_is_accepted(self):
        response = self.send("POST", TODOS, padded_body(self.LIMIT))
        self.assertEqual(response.status_code, 201)

    def test_body_over_the_limit_answers_413(self):
        for size in (self.LIMIT + 1, 10 * self.LIMIT):
            for method, path in WRITES:
                with self.subTest(method=method, size=size):
                    self.assertRejected(413, method, path, padded_body(size))

    def test_chunked_body_answers_411_before_it_is_read(self):
        # A server may pass on the part of a broken chunked body that arrived, which can be a
        # whole JSON document: a body is trusted to be whole only from its Content-Length.
        for size in (self.LIMIT, self.LIMIT + 1):
            for method, path in WRITES:
                with self.subTest(method=method, size=size):
                    self.assertRejected(
                        411,
                        method,
                        path,
                        input_stream=io.BytesIO(padded_body(size)),
                        headers={"Transfer-Encoding": "chunked"},
                        environ_overrides={"wsgi.input_terminated": True},
                    )

    def test_the_content_type_is_checked_before_the_transfer_coding(self):
        self.assertRejected(
            415,
            "POST",
            TODOS,
            input_stream=io.BytesIO(b'{"title": "x"}'),
            content_type="text/plain",
            headers={"Transfer-Encoding": "chunked"},
            environ_overrides={"wsgi.input_terminated": True},
        )

    def test_other_transfer_codings_answer_501(self):
        for coding in ("gzip, chunked", "deflate", "identity"):
            for method, path in WRITES:
                with self.subTest(method=method, coding=coding):
                    problem = self.assertRejected(
                        501,
                        method,
                        path,
                        input_stream=io.BytesIO(b'{"title": "x"}'),
                        headers={"Transfer-Encoding": coding},
                        environ_overrides={"wsgi.input_terminated": True},
                    )
                    self.assertIn(repr(coding.split(",")[0]), problem["detail"])

    def test_body_shorter_than_its_content_length_answers_400(self):
        # What a server hands over from a client that gave up half-way: a whole JSON document,
        # short of the length announced.
        body = b'{"title": "cut short"}'
        for method, path in WRITES:
            with self.subTest(method=method):
                problem = self.assertRejected(
                    400,
                    method,
                    path,
                    input_stream=io.BytesIO(body),
                    environ_overrides={
                        "CONTENT_LENGTH": str(len(body) + 1),
                        "wsgi.input_terminated": True,
                    },
                )
                self.assertIn(
                    f"ended after {len(body)} of the {len(body) + 1} bytes", problem["detail"]
                )


class TestConfiguredBodyLimit(BadInputTestCase):
    config = {"MAX_CONTENT_LENGTH": 1024}

    def test_body_of_the_configured_limit_is_accepted(self):
        response = self.send("POST", TODOS, padded_body(1024))
        self.assertEqual(response.status_code, 201)

    def test_body_over_the_configured_limit_answers_413(self):
        for method, path in WRITES:
            with self.subTest(method=method):
                problem = self.assertRejected(413, method, path, padded_body(1025))
                self.assertIn("limit of 1024 bytes", problem["detail"])


# Ids are checked by the store, beside the queries they would break: on every engine.
@across_databases
class TestIdsThatCannotExist(BadInputTestCase):
    IDS = ("0", "-1", "9223372036854775808", "18446744073709551616", "9" * 40, "abc", "1.0")

    def test_updates_answer_404_and_change_nothing(self):
        for todo_id in self.IDS:
            for method in ("PUT", "PATCH"):
                with self.subTest(method=method, todo_id=todo_id):
                    self.assertRejected(404, method, f"{TODOS}/{todo_id}", {"title": "x"})

    def test_delete_answers_an_empty_object_and_deletes_nothing(self):
        for todo_id in self.IDS:
            with self.subTest(todo_id=todo_id):
                before = self.state()
                response = self.client.delete(f"{TODOS}/{todo_id}")
                self.assertEqual((response.status_code, response.get_json()), (200, {}))
                self.assertEqual(self.state(), before)
