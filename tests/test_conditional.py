"""ETags and preconditions (If-None-Match, If-Match, If-Unmodified-Since) on one todo."""

import threading
import time
import unittest
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from unittest import mock

from tests.base import TOKEN_MODE, AppTestCase, across_databases, bearer, sign_up
from todo.driver import Connection
from todo.models import db
from todo.views.http import http_date

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
                refused = self.send(method, self.tag, body)
                self.assertProblem(refused, 412)
                # The refusal names the current version, so the client can read it and retry.
                self.assertEqual(refused.headers["ETag"], self.current.headers["ETag"])
                after = self.client.get(TODO)
                self.assertEqual(after.get_json(), self.current.get_json())
                self.assertEqual(after.headers["ETag"], self.current.headers["ETag"])

    def test_the_tag_of_a_412_makes_the_retry_succeed(self):
        for method, body, tags in (
            ("PATCH", {"title": "one tag"}, self.tag),
            # Several tags take the locked path of the store.
            ("PUT", {"title": "two tags"}, f'{self.tag}, "1-999"'),
            ("DELETE", None, self.tag),
        ):
            with self.subTest(method=method):
                refused = self.send(method, tags, body)
                self.assertProblem(refused, 412)
                self.assertEqual(refused.headers["ETag"], self.client.get(TODO).headers["ETag"])
                self.assertEqual(self.send(method, refused.headers["ETag"], body).status_code, 200)

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


@across_databases
class TestPreconditionsOnAnotherUsersTodo(AppTestCase):
    """AUTH token: another user's todo is missing, whatever the precondition; no tag leaks."""

    config = TOKEN_MODE

    def test_a_stale_tag_on_another_users_todo_is_404_without_an_etag(self):
        alice = bearer(sign_up(self.client, "alice"))
        mallory = bearer(sign_up(self.client, "mallory"))
        self.client.post("/api/v1/todos", json={"title": "alice's"}, headers=alice)
        for method, body in (("PUT", {"title": "x"}), ("PATCH", {"title": "x"}), ("DELETE", None)):
            for precondition in ({"If-Match": '"1-999"'}, {"If-None-Match": "*"}):
                with self.subTest(method=method, precondition=precondition):
                    response = self.client.open(
                        TODO, method=method, json=body, headers=mallory | precondition
                    )
                    self.assertNotIn("ETag", response.headers)
                    if method == "DELETE":
                        self.assertEqual((response.status_code, response.get_json()), (200, {}))
                    else:
                        self.assertProblem(response, 404)
        self.assertEqual(self.client.get(TODO, headers=alice).get_json()["title"], "alice's")


class TestMalformedPreconditions(AppTestCase):
    """A precondition header that cannot be read is a 400 naming it; nothing changes."""

    MALFORMED = (
        '"1-1" x',
        '"1-1";',
        '"1-1',
        ",,,",
        "",
        "1-1",
        'w/"1-1"',
        'W/ "1-1"',
        '*, "1-1"',
        '"1-1" "1-2"',
        '"1-1"x',
        '"\x7f"',
    )

    def setUp(self) -> None:
        super().setUp()
        self.tag = self.client.post("/api/v1/todos", json={"title": "guarded"}).headers["ETag"]
        self.current = self.client.get(TODO)

    def assertUnchanged(self) -> None:  # noqa: N802
        after = self.client.get(TODO)
        self.assertEqual(after.get_json(), self.current.get_json())
        self.assertEqual(after.headers["ETag"], self.current.headers["ETag"])

    def test_malformed_if_match_or_if_none_match_on_a_write_is_400_and_changes_nothing(self):
        for header in ("If-Match", "If-None-Match"):
            for value in self.MALFORMED + (f"{self.tag} x", f"{self.tag};"):
                for method, body in (("PUT", {"title": "x"}), ("PATCH", {}), ("DELETE", None)):
                    with self.subTest(header=header, value=value, method=method):
                        response = self.client.open(
                            TODO, method=method, json=body, headers={header: value}
                        )
                        self.assertProblem(response, 400, header)
                        self.assertUnchanged()

    def test_malformed_if_none_match_on_get_is_400(self):
        for value in self.MALFORMED:
            for url in (TODO, "/api/v1/todos/2"):
                with self.subTest(value=value, url=url):
                    response = self.client.get(url, headers={"If-None-Match": value})
                    self.assertProblem(response, 400, "If-None-Match")

    def test_a_malformed_header_is_400_for_a_missing_todo_too(self):
        response = self.client.delete("/api/v1/todos/2", headers={"If-Match": '"2-1'})
        self.assertProblem(response, 400, "If-Match")

    def test_well_formed_foreign_tags_are_412_never_400_or_500(self):
        for value in ('""', 'W/""', '"", ""', '"1-1,1-2"', '"01-1"', '"1-01"', '"\x80\xff"'):
            for method, body in (("PUT", {"title": "x"}), ("PATCH", {}), ("DELETE", None)):
                with self.subTest(value=value, method=method):
                    response = self.client.open(
                        TODO, method=method, json=body, headers={"If-Match": value}
                    )
                    self.assertProblem(response, 412)
                    self.assertUnchanged()
            with self.subTest(value=value, method="GET"):
                response = self.client.get(TODO, headers={"If-None-Match": value})
                self.assertEqual(response.status_code, 200)

    def test_whitespace_and_empty_list_elements_around_tags_are_accepted(self):
        for value in (f' ,{self.tag}, ""', f'\t"", ,{self.tag} , ', f",,{self.tag},,"):
            with self.subTest(value=value):
                response = self.client.patch(TODO, json={}, headers={"If-Match": value})
                self.assertEqual(response.status_code, 200)
                cached = self.client.get(TODO, headers={"If-None-Match": value})
                self.assertEqual(cached.status_code, 304)


@across_databases
class TestIfNoneMatchOnWrites(AppTestCase):
    """If-None-Match on PUT, PATCH and DELETE: 412 when the todo holds a listed version."""

    def setUp(self) -> None:
        super().setUp()
        self.tag = self.client.post("/api/v1/todos", json={"title": "guarded"}).headers["ETag"]

    def send(self, method: str, value: str, body: dict | None = None):
        return self.client.open(TODO, method=method, json=body, headers={"If-None-Match": value})

    def test_star_or_the_current_tag_answers_412_and_changes_nothing(self):
        for value in ("*", self.tag, f"W/{self.tag}", f'"0-0", {self.tag}'):
            for method, body in (("PUT", {"title": "x"}), ("PATCH", {}), ("DELETE", None)):
                with self.subTest(value=value, method=method):
                    refused = self.send(method, value, body)
                    self.assertProblem(refused, 412)
                    self.assertEqual(refused.headers["ETag"], self.tag)
                    after = self.client.get(TODO)
                    self.assertEqual(after.get_json()["title"], "guarded")
                    self.assertEqual(after.headers["ETag"], self.tag)

    def test_tags_that_are_not_current_let_the_write_through(self):
        stale = self.tag
        changed = self.client.patch(TODO, json={"title": "changed"})
        for value in (stale, '"2-1"', f'"0-0", {stale}'):
            with self.subTest(value=value):
                response = self.send("PATCH", value, {"completed": True})
                self.assertEqual(response.status_code, 200)
        self.assertNotEqual(changed.headers["ETag"], self.client.get(TODO).headers["ETag"])
        self.assertEqual(self.send("DELETE", stale).status_code, 200)
        self.assertProblem(self.client.get(TODO), 404)

    def test_missing_todo_keeps_its_usual_answers(self):
        self.client.delete(TODO)
        for method in ("PUT", "PATCH"):
            with self.subTest(method=method):
                self.assertProblem(self.send(method, "*", {"title": "x"}), 404)
        response = self.send("DELETE", "*")
        self.assertEqual((response.status_code, response.get_json()), (200, {}))

    def test_if_match_and_if_none_match_must_both_pass(self):
        headers = {"If-Match": self.tag, "If-None-Match": self.tag}
        self.assertProblem(self.client.patch(TODO, json={"title": "x"}, headers=headers), 412)
        headers = {"If-Match": self.tag, "If-None-Match": '"1-99"'}
        response = self.client.patch(TODO, json={"title": "x"}, headers=headers)
        self.assertEqual(response.status_code, 200)


def _http_date(value: str) -> str:
    """Write a timestamp the API answered as an IMF-fixdate."""
    return format_datetime(datetime.fromisoformat(value).replace(tzinfo=UTC), usegmt=True)


@across_databases
class TestIfUnmodifiedSince(AppTestCase):
    """If-Unmodified-Since on PUT, PATCH and DELETE: 412 when updated_at is later."""

    def setUp(self) -> None:
        super().setUp()
        self.todo = self.client.post("/api/v1/todos", json={"title": "dated"}).get_json()
        self.updated = datetime.fromisoformat(self.todo["updated_at"])

    def send(self, method: str, value: str, body: dict | None = None, **headers: str):
        headers = {"If-Unmodified-Since": value} | headers
        return self.client.open(TODO, method=method, json=body, headers=headers)

    def test_a_date_before_the_last_change_answers_412_and_changes_nothing(self):
        second_before = _http_date((self.updated - timedelta(seconds=1)).isoformat())
        for value in (
            second_before,
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "Mon, 01 Jan 0001 00:00:00 GMT",
        ):
            for method, body in (("PUT", {"title": "x"}), ("PATCH", {}), ("DELETE", None)):
                with self.subTest(value=value, method=method):
                    refused = self.send(method, value, body)
                    self.assertProblem(refused, 412)
                    current = self.client.get(TODO)
                    self.assertEqual(refused.headers["ETag"], current.headers["ETag"])
                    self.assertEqual(current.get_json(), self.todo)

    def test_the_date_of_the_last_change_or_later_lets_the_write_through(self):
        for value in (
            _http_date(self.todo["updated_at"]),
            "Fri, 31 Dec 9999 23:59:59 GMT",
        ):
            with self.subTest(value=value):
                response = self.send("PATCH", value, {"title": value})
                self.assertEqual(response.status_code, 200)
                self.assertEqual(response.get_json()["title"], value)
        response = self.send("DELETE", _http_date(self.client.get(TODO).get_json()["updated_at"]))
        self.assertEqual(response.status_code, 200)
        self.assertProblem(self.client.get(TODO), 404)

    def test_a_value_that_is_not_an_http_date_is_ignored(self):
        for value in (
            "",
            "yesterday",
            "1994-11-06T08:49:37Z",
            "Sun, 06 Nov 1994 08:49:37 UTC",
            "sun, 06 nov 1994 08:49:37 gmt",
            "Sun, 31 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 1994 08:49:61 GMT",
            "Sun, 06 Nov 1994 08:49:37 GMT, Mon, 07 Nov 1994 08:49:37 GMT",
        ):
            with self.subTest(value=value):
                response = self.send("PATCH", value, {"title": value or "empty"})
                self.assertEqual(response.status_code, 200)

    def test_ignored_when_if_match_is_present(self):
        current = self.client.get(TODO).headers["ETag"]
        response = self.send(
            "PATCH", "Sun, 06 Nov 1994 08:49:37 GMT", {"title": "x"}, **{"If-Match": current}
        )
        self.assertEqual(response.status_code, 200)

    def test_missing_todo_keeps_its_usual_answers(self):
        self.client.delete(TODO)
        past = "Sun, 06 Nov 1994 08:49:37 GMT"
        self.assertProblem(self.send("PUT", past, {"title": "x"}), 404)
        response = self.send("DELETE", past)
        self.assertEqual((response.status_code, response.get_json()), (200, {}))


class TestHttpDates(unittest.TestCase):
    """The three forms of HTTP-date, read without HTTP."""

    def test_the_three_forms_read_as_naive_utc(self):
        expected = datetime(1994, 11, 6, 8, 49, 37)
        for value in (
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
            "  Sun, 06 Nov 1994 08:49:37 GMT\t",
        ):
            with self.subTest(value=value):
                self.assertEqual(http_date(value), expected)

    def test_a_leap_second_reads_as_the_last_second_of_its_minute(self):
        self.assertEqual(
            http_date("Sat, 31 Dec 2016 23:59:60 GMT"), datetime(2016, 12, 31, 23, 59, 59)
        )

    def test_a_two_digit_year_more_than_50_years_ahead_is_in_the_past(self):
        year = datetime.now(UTC).year
        for ahead, expected in ((50, year + 50), (51, year + 51 - 100), (0, year)):
            target = year + ahead
            value = f"Monday, 01-Jan-{target % 100:02d} 00:00:00 GMT"
            with self.subTest(value=value):
                self.assertEqual(http_date(value), datetime(expected, 1, 1))

    def test_anything_else_is_not_a_date(self):
        for value in (
            "",
            "Sun, 6 Nov 1994 08:49:37 GMT",
            "Sun, 06 Nov 94 08:49:37 GMT",
            "Sun, 06 Nov 1994 24:00:00 GMT",
            "Sun, 06 Nov 0000 00:00:00 GMT",
            "Sun, 06 Nov 1994 08:49:37 +0000",
            "Sun, \u0660\u0666 Nov 1994 08:49:37 GMT",
        ):
            with self.subTest(value=value):
                self.assertIsNone(http_date(value))


@across_databases
class TestCostOfPreconditions(AppTestCase):
    """The statements a write runs do not grow with the number of tags it names."""

    def setUp(self) -> None:
        super().setUp()
        with self.app.app_context():
            self.returning = db.engine.dialect.update_returning

    def statements(self, method: str, url: str, headers: dict, body: dict | None = None):
        """Send a request; return its response and how many statements it ran."""
        with mock.patch.object(
            Connection, "_run", autospec=True, side_effect=Connection._run
        ) as run:
            response = self.client.open(url, method=method, json=body, headers=headers)
        return response, run.call_count

    def fresh(self) -> tuple[str, str, str]:
        """Create a todo; return its URL, its ETag and tags of versions it never had."""
        response = self.client.post("/api/v1/todos", json={"title": "counted"})
        todo_id = response.get_json()["id"]
        others = (f'"{todo_id}-{version}"' for version in range(1000, 100_000))
        return response.headers["Location"], response.headers["ETag"], others

    @staticmethod
    def listed(others, count: int, *also: str) -> str:
        """List `count` of the other tags, then `also`."""
        return ", ".join([*(next(others) for _ in range(count)), *also])

    def test_no_precondition_or_one_tag_is_one_statement_where_update_returns_rows(self):
        one = 1 if self.returning else 2
        for precondition in ("none", "the current tag", "*"):
            url, tag, _ = self.fresh()
            headers = {"none": {}, "the current tag": {"If-Match": tag}, "*": {"If-Match": "*"}}
            with self.subTest(precondition=precondition):
                response, count = self.statements(
                    "PATCH", url, headers[precondition], {"completed": True}
                )
                self.assertEqual((response.status_code, count), (200, one))

    def test_thousands_of_tags_cost_what_two_do(self):
        for header in ("If-Match", "If-None-Match"):
            for method, body in (("PATCH", {"title": "x"}), ("DELETE", None)):
                counts = {}
                for tags in (2, 5000):
                    url, tag, others = self.fresh()
                    # If-Match lists the current tag last, If-None-Match only other tags.
                    if header == "If-Match":
                        value = self.listed(others, tags - 1, tag)
                    else:
                        value = self.listed(others, tags)
                    with self.subTest(header=header, method=method, tags=tags):
                        response, counts[tags] = self.statements(method, url, {header: value}, body)
                        self.assertEqual(response.status_code, 200)
                with self.subTest(header=header, method=method):
                    self.assertEqual(counts[2], counts[5000])
                    # BEGIN (SQLite), the locked read, the write, and the read back
                    # (MariaDB) or the tombstone (a delete).
                    self.assertLessEqual(counts[5000], 4)

    def test_a_stale_list_of_thousands_is_412_at_constant_cost(self):
        for method, body in (("PUT", {"title": "x"}), ("DELETE", None)):
            url, _, others = self.fresh()
            with self.subTest(method=method):
                value = self.listed(others, 5000)
                response, count = self.statements(method, url, {"If-Match": value}, body)
                self.assertProblem(response, 412)
                self.assertLessEqual(count, 3)

    def test_a_malformed_header_runs_no_statement(self):
        url, tag, _ = self.fresh()
        response, count = self.statements("PATCH", url, {"If-Match": tag[:-1]}, {"title": "x"})
        self.assertEqual((response.status_code, count), (400, 0))

    def test_twenty_thousand_tags_answer_promptly_and_correctly(self):
        url, tag, others = self.fresh()
        value = self.listed(others, 20000, tag)
        started = time.monotonic()
        response = self.client.patch(url, json={"title": "fast"}, headers={"If-Match": value})
        self.assertEqual(response.status_code, 200)
        self.assertProblem(
            self.client.patch(url, json={"title": "no"}, headers={"If-Match": value}), 412
        )
        self.assertLess(time.monotonic() - started, 5)
        self.assertEqual(self.client.get(url).get_json()["title"], "fast")


@across_databases
class TestPreconditionsUnderConcurrency(AppTestCase):
    """Writers racing with one tag: the check and the write are one step, so one wins."""

    WRITERS = 8

    def make_app(self, **overrides):
        if self.database == "SQLite":
            # Writers on threads need connections of their own: a file, not one shared in memory.
            overrides.setdefault("SQLALCHEMY_DATABASE_URI", self.fresh_database_url())
        return super().make_app(**overrides)

    def race(self, url: str, headers: dict[str, str]) -> list[int]:
        """Send one conditional PATCH from several threads at once; return the statuses."""
        start = threading.Barrier(self.WRITERS)

        def write(writer: int) -> int:
            client = self.app.test_client()
            start.wait()
            body = {"title": f"writer {writer}"}
            return client.patch(url, json=body, headers=headers).status_code

        with ThreadPoolExecutor(self.WRITERS) as pool:
            return sorted(pool.map(write, range(self.WRITERS)))

    def test_one_writer_wins_with_one_tag_or_several(self):
        for precondition in ("one tag", "several tags"):
            with self.subTest(precondition=precondition):
                created = self.client.post("/api/v1/todos", json={"title": "contested"})
                url, tag = created.headers["Location"], created.headers["ETag"]
                other = f'"{created.get_json()["id"]}-99"'
                headers = {
                    "one tag": {"If-Match": tag},
                    "several tags": {"If-Match": f"{other}, {tag}", "If-None-Match": other},
                }[precondition]
                statuses = self.race(url, headers)
                self.assertEqual(statuses, [200] + [412] * (self.WRITERS - 1))
                self.assertRegex(self.client.get(url).get_json()["title"], "^writer ")
