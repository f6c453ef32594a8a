"""GET /todos: order, filters, keyset paging with Link headers, and bad query parameters."""

import re
from datetime import UTC, datetime, timedelta
from unittest import mock
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import insert

from tests.base import AppTestCase, across_databases
from todo import lists
from todo.models import db
from todo.models.todo import Todo

TODOS = "/api/v1/todos"
NEXT_LINK = re.compile(r'^<([^>]*)>; rel="next"$')


def in_days(days: float) -> str:
    """Return the deadline `days` from now (negative: in the past), as the API writes it."""
    moment = datetime.now(UTC) + timedelta(days=days)
    return moment.strftime("%Y-%m-%dT%H:%M:%S")


class ListTestCase(AppTestCase):
    def get_list(self, query: str = ""):
        """List todos with a query string; assert it succeeds and return the response."""
        response = self.client.get(f"{TODOS}?{query}" if query else TODOS)
        self.assertEqual(response.status_code, 200, response.get_data(as_text=True))
        return response

    def ids(self, query: str = "") -> list[int]:
        """Return the ids the list answers with for a query."""
        return [todo["id"] for todo in self.get_list(query).get_json()]

    def titles(self, query: str = "") -> list[str]:
        """Return the titles the list answers with for a query."""
        return [todo["title"] for todo in self.get_list(query).get_json()]

    def next_link(self, response) -> str | None:
        """Return the rel=next target of a response, or None when it has none."""
        header = response.headers.get("Link")
        if header is None:
            return None
        match = NEXT_LINK.fullmatch(header)
        self.assertIsNotNone(match, header)
        return match[1]

    def walk(self, first: str) -> list[list[int]]:
        """Follow rel=next links from a first query; return the ids of each page."""
        pages = []
        url: str | None = f"{TODOS}?{first}"
        while url is not None:
            self.assertLess(len(pages), 100, "the Link headers never stop")
            response = self.client.get(url)
            self.assertEqual(response.status_code, 200, response.get_data(as_text=True))
            pages.append([todo["id"] for todo in response.get_json()])
            url = self.next_link(response)
        return pages

    def assertQueryRejected(self, query: str, parameter: str, message: str | None = None):  # noqa: N802
        """Assert a 400 problem naming `parameter` (with `message`, when given)."""
        response = self.client.get(f"{TODOS}?{query}")
        problem = self.assertProblem(response, 400, parameter)
        self.assertIn(parameter, problem["detail"])
        if message is not None:
            self.assertEqual(problem["errors"], [{"field": parameter, "message": message}])


@across_databases
class TestOrder(ListTestCase):
    def test_empty_database_lists_nothing(self):
        response = self.get_list()
        self.assertEqual(response.get_json(), [])
        self.assertEqual(response.mimetype, "application/json")
        self.assertIsNone(response.headers.get("Link"))

    def test_todos_are_ordered_by_id_not_by_insertion(self):
        with self.app.app_context():
            for todo_id in (3, 1, 2):
                db.session.add(Todo(id=todo_id, title=f"todo {todo_id}"))
                db.session.commit()
        self.assertEqual(self.ids(), [1, 2, 3])
        self.assertEqual(self.ids("limit=2"), [1, 2])

    def test_todos_are_ordered_by_id_after_deletes_and_updates(self):
        for number in range(5):
            self.create(title=f"todo {number}")
        self.client.delete(f"{TODOS}/2")
        self.client.put(f"{TODOS}/1", json={"title": "changed last"})
        self.create(title="newest")
        self.assertEqual(self.ids(), [1, 3, 4, 5, 6])


@across_databases
class TestCompletedFilter(ListTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.create(title="open", completed=False)
        self.create(title="done", completed=True)
        self.create(title="open too")

    def test_true_in_any_letter_case_lists_only_completed_todos(self):
        for value in ("true", "TRUE", "True", "tRuE"):
            with self.subTest(value=value):
                self.assertEqual(self.titles(f"completed={value}"), ["done"])

    def test_false_in_any_letter_case_lists_only_open_todos(self):
        for value in ("false", "FALSE", "False", "fAlSe"):
            with self.subTest(value=value):
                self.assertEqual(self.titles(f"completed={value}"), ["open", "open too"])


@across_databases
class TestWindowFilter(ListTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.create(title="overdue", deadline_at=in_days(-10))
        self.create(title="overdue and done", deadline_at=in_days(-1), completed=True)
        self.create(title="in 12 hours", deadline_at=in_days(0.5))
        self.create(title="in 47 hours", deadline_at=in_days(47 / 24))
        self.create(title="in 400 days", deadline_at=in_days(400))
        self.create(title="no deadline")
        self.create(title="year 9999", deadline_at="9999-12-31T23:59:59")

    def test_window_zero_lists_only_overdue_todos(self):
        self.assertEqual(self.titles("window=0"), ["overdue", "overdue and done"])

    def test_window_includes_overdue_and_excludes_beyond_it(self):
        self.assertEqual(self.titles("window=1"), ["overdue", "overdue and done", "in 12 hours"])
        self.assertEqual(
            self.titles("window=2"),
            ["overdue", "overdue and done", "in 12 hours", "in 47 hours"],
        )

    def test_largest_window_lists_deadlines_within_a_hundred_years(self):
        self.assertEqual(
            self.titles("window=36500"),
            ["overdue", "overdue and done", "in 12 hours", "in 47 hours", "in 400 days"],
        )

    def test_todos_without_deadline_are_never_in_a_window(self):
        for window in ("0", "1", "36500"):
            with self.subTest(window=window):
                self.assertNotIn("no deadline", self.titles(f"window={window}"))

    def test_leading_zeros_and_plus_sign_are_integers(self):
        self.assertEqual(self.titles("window=%2B0"), self.titles("window=0"))
        self.assertEqual(self.titles("window=0001"), self.titles("window=1"))


@across_databases
class TestLimit(ListTestCase):
    def setUp(self) -> None:
        super().setUp()
        for number in range(1, 6):
            self.create(title=f"todo {number}")

    def test_limit_returns_at_most_that_many_todos(self):
        self.assertEqual(self.ids("limit=1"), [1])
        self.assertEqual(self.ids("limit=3"), [1, 2, 3])

    def test_largest_limit_is_accepted(self):
        self.assertEqual(self.ids("limit=1000"), [1, 2, 3, 4, 5])


@across_databases
class TestAfter(ListTestCase):
    def setUp(self) -> None:
        super().setUp()
        for number in range(1, 6):
            self.create(title=f"todo {number}")

    def test_after_lists_only_larger_ids(self):
        self.assertEqual(self.ids("after=2"), [3, 4, 5])
        self.assertEqual(self.ids("after=4"), [5])

    def test_after_the_last_id_lists_nothing(self):
        self.assertEqual(self.ids("after=5"), [])

    def test_after_zero_or_negative_lists_everything(self):
        for value in ("0", "-0", "-1", "-9223372036854775809", "-" + "9" * 40):
            with self.subTest(value=value):
                self.assertEqual(self.ids(f"after={value}"), [1, 2, 3, 4, 5])

    def test_after_beyond_any_id_is_an_empty_page_not_an_error(self):
        for value in (
            str(2**31),
            str(2**63 - 1),
            str(2**63),
            str(2**64),
            "9" * 40,
            "9" * 5000,
        ):
            with self.subTest(value=value[:25]):
                response = self.get_list(f"after={value}&limit=10")
                self.assertEqual(response.get_json(), [])
                self.assertIsNone(response.headers.get("Link"))


@across_databases
class TestPaging(ListTestCase):
    def setUp(self) -> None:
        super().setUp()
        for number in range(1, 24):
            deadline = in_days(number) if number % 2 else None
            self.create(title=f"todo {number}", completed=number % 3 == 0, deadline_at=deadline)
        # Gaps in the ids must not make pages skip or repeat todos.
        for todo_id in (4, 5, 11, 23):
            self.client.delete(f"{TODOS}/{todo_id}")

    def test_link_names_the_next_page_while_more_follow(self):
        response = self.get_list("limit=2")
        self.assertEqual([todo["id"] for todo in response.get_json()], [1, 2])
        link = self.next_link(response)
        self.assertEqual(urlsplit(link).path, TODOS)
        self.assertEqual(parse_qs(urlsplit(link).query), {"limit": ["2"], "after": ["2"]})

    def test_no_link_when_nothing_more_follows(self):
        all_ids = self.ids()
        for query in (
            f"limit={len(all_ids)}",
            "limit=1000",
            "after=20&limit=2",
            "after=22&limit=1",
        ):
            with self.subTest(query=query):
                self.assertIsNone(self.next_link(self.get_list(query)))

    def test_no_link_without_limit(self):
        self.assertIsNone(self.next_link(self.get_list("after=3")))

    def test_link_keeps_the_other_parameters(self):
        response = self.get_list("completed=FALSE&window=36500&limit=2&after=1")
        self.assertEqual([todo["id"] for todo in response.get_json()], [7, 13])
        self.assertEqual(
            parse_qs(urlsplit(self.next_link(response)).query),
            {"completed": ["FALSE"], "window": ["36500"], "limit": ["2"], "after": ["13"]},
        )

    def test_following_links_walks_every_todo_once_in_order(self):
        for first, everything in (
            ("limit=5", ""),
            ("limit=1", ""),
            ("limit=4&after=6", "after=6"),
            ("completed=false&limit=3", "completed=false"),
            ("completed=true&limit=2", "completed=true"),
            ("window=36500&completed=FALSE&limit=2", "window=36500&completed=false"),
        ):
            with self.subTest(first=first):
                pages = self.walk(first)
                walked = [todo_id for page in pages for todo_id in page]
                self.assertEqual(walked, self.ids(everything))
                limit = int(parse_qs(first)["limit"][0])
                self.assertTrue(all(1 <= len(page) <= limit for page in pages), pages)


@across_databases
class TestCombinedFilters(ListTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.create(title="overdue open", deadline_at=in_days(-1))
        self.create(title="overdue done", deadline_at=in_days(-1), completed=True)
        self.create(title="far done", deadline_at=in_days(30), completed=True)
        self.create(title="no deadline done", completed=True)
        self.create(title="soon done", deadline_at=in_days(0.5), completed=True)
        self.create(title="soon open", deadline_at=in_days(0.5))

    def test_filters_combine_with_and(self):
        self.assertEqual(self.titles("completed=true&window=1"), ["overdue done", "soon done"])
        self.assertEqual(self.titles("completed=false&window=0"), ["overdue open"])
        self.assertEqual(self.titles("completed=true&window=1&after=2"), ["soon done"])
        self.assertEqual(
            self.titles("completed=true&limit=2&after=2"), ["far done", "no deadline done"]
        )
        self.assertEqual(self.titles("window=1&completed=false&limit=1&after=1"), ["soon open"])


@across_databases
class TestFewOrManyMatches(ListTestCase):
    """A filtered list reads through an index when few todos match, and walks by id when many
    do (todo.lists): the list is the same either way, paged or whole."""

    # Filters that an index serves: open todos (by deadline), and a window alone.
    INDEXED = (
        "completed=false&window=2",
        "completed=false",
        "completed=false&window=0",
        "window=1",
    )

    def setUp(self) -> None:
        super().setUp()
        now = datetime.now(UTC).replace(microsecond=0)
        # Todo n is open when n is odd and, unless n is a multiple of 3, due n % 10 - 5 days
        # from now: every filter matches some todos, spread over the ids.
        rows = [
            {
                "title": f"todo {number}",
                "completed": number % 2 == 0,
                "deadline_at": now + timedelta(days=number % 10 - 5) if number % 3 else None,
                "created_at": now,
                "updated_at": now,
            }
            for number in range(1, 121)
        ]
        with self.app.app_context():
            db.session.execute(insert(Todo), rows)
            db.session.commit()
        self.numbers = {todo["id"]: int(todo["title"].split()[1]) for todo in self.get_list().json}

    def expected(self, query: str) -> list[int]:
        """Return the ids that match a query, by the rule the todos were made with."""
        parameters = {name: values[0] for name, values in parse_qs(query).items()}

        def matches(number: int) -> bool:
            if "completed" in parameters and (number % 2 == 0) != (
                parameters["completed"] == "true"
            ):
                return False
            if "window" in parameters:
                return bool(number % 3) and number % 10 - 5 <= int(parameters["window"])
            return True

        after = int(parameters.get("after", 0))
        return [
            todo_id
            for todo_id, number in self.numbers.items()
            if todo_id > after and matches(number)
        ]

    def read(self, query: str, index_batches: int, follow=True) -> tuple[list[int], set[bool]]:
        """Return the ids listed for a query (following its pages), and how they were read."""
        with (
            mock.patch.object(lists, "INDEX_BATCHES", index_batches),
            mock.patch.object(lists, "select_todos", wraps=lists.select_todos) as select,
        ):
            pages = self.walk(query) if follow else [self.ids(query)]
        ids = [todo_id for page in pages for todo_id in page]
        return ids, {call.kwargs["through_index"] for call in select.call_args_list}

    def test_a_filtered_list_is_the_same_read_through_the_index_or_walked(self):
        for query in self.INDEXED:
            for shape in ("", "&limit=3", "&limit=3&after=50"):
                expected = self.expected(query + shape)
                self.assertTrue(expected)
                for index_batches, through_index in ((0, False), (10**6, True)):
                    with self.subTest(query=query + shape, through_index=through_index):
                        ids, ways = self.read(query + shape, index_batches)
                        self.assertEqual(ids, expected)
                        self.assertEqual(ways, {through_index})

    def test_completed_todos_are_always_walked_to(self):
        for query in ("completed=true", "completed=true&window=1", "completed=true&limit=3"):
            with self.subTest(query=query):
                ids, ways = self.read(query, 10**6)
                self.assertEqual(ids, self.expected(query))
                self.assertEqual(ways, {False})

    def test_the_index_serves_a_list_whose_matches_all_fit_in_its_page(self):
        matching = len(self.expected("completed=false"))
        self.assertEqual(matching, 60)
        # A page of 59 is read as 60 todos (one more tells whether a next page follows). A
        # later page counts only the matches after it.
        for limit, through_index in ((59, True), (58, False)):
            with self.subTest(limit=limit):
                query = f"completed=false&limit={limit}"
                ids, ways = self.read(query, lists.INDEX_BATCHES, follow=False)
                self.assertEqual(ids, self.expected("completed=false")[:limit])
                self.assertEqual(ways, {through_index})
        # Streamed, the 60 fit in one batch of 1000.
        self.assertEqual(self.read("completed=false", lists.INDEX_BATCHES)[1], {True})


class TestBadValues(ListTestCase):
    """Parameters are checked before the database is asked, so these run on SQLite only."""

    def test_completed_other_than_true_or_false_answers_400(self):
        for value in ("", "1", "0", "yes", "no", "t", "f", "null", "truee", "%20true", "true%00"):
            with self.subTest(value=value):
                self.assertQueryRejected(f"completed={value}", "completed", "must be true or false")

    def test_completed_without_a_value_answers_400(self):
        self.assertQueryRejected("completed", "completed")

    def test_bad_windows_answer_400(self):
        for value, message in (
            ("-1", "must be at least 0"),
            ("36501", "must be at most 36500"),
            ("9" * 40, "must be at most 36500"),
            ("9" * 5000, "must be at most 36500"),
            ("-" + "9" * 40, "must be at least 0"),
            ("1.5", "must be an integer"),
            ("1e3", "must be an integer"),
            ("0x10", "must be an integer"),
            ("abc", "must be an integer"),
            ("", "must be an integer"),
            ("%201", "must be an integer"),
            ("1_000", "must be an integer"),
            ("%EF%BC%91", "must be an integer"),
        ):
            with self.subTest(value=value[:20]):
                self.assertQueryRejected(f"window={value}", "window", message)

    def test_limits_out_of_range_or_not_integers_answer_400(self):
        for value, message in (
            ("0", "must be at least 1"),
            ("-1", "must be at least 1"),
            ("1001", "must be at most 1000"),
            ("9" * 40, "must be at most 1000"),
            ("", "must be an integer"),
            ("abc", "must be an integer"),
            ("1.5", "must be an integer"),
            ("ten", "must be an integer"),
        ):
            with self.subTest(value=value):
                self.assertQueryRejected(f"limit={value}", "limit", message)

    def test_after_that_is_not_an_integer_answers_400(self):
        for value in ("", "abc", "1.5", "1e3", "%EF%BC%91", "0x1"):
            with self.subTest(value=value):
                self.assertQueryRejected(f"after={value}", "after", "must be an integer")

    def test_each_bad_parameter_is_named(self):
        problem = self.assertProblem(
            self.client.get(f"{TODOS}?completed=maybe&window=-1&limit=0&after=x"),
            400,
            "completed",
            "window",
            "limit",
            "after",
        )
        for name in ("completed", "window", "limit", "after"):
            self.assertIn(name, problem["detail"])


class TestUnknownAndRepeatedParameters(ListTestCase):
    """Checked before the database is asked too: SQLite only."""

    def test_unknown_parameter_answers_400_naming_it(self):
        for query, name in (
            ("sort=id", "sort"),
            ("Completed=true", "Completed"),
            ("completed=true&offset=2", "offset"),
            ("limit=1&page=2", "page"),
            ("q=", "q"),
        ):
            with self.subTest(query=query):
                self.assertQueryRejected(query, name, "unknown parameter")

    def test_every_unknown_parameter_is_named(self):
        problem = self.assertProblem(self.client.get(f"{TODOS}?b=1&a=2"), 400, "a", "b")
        self.assertEqual(problem["detail"], "The query has unknown parameters: a, b")

    def test_repeated_parameter_answers_400_naming_it(self):
        for query, name in (
            ("completed=true&completed=true", "completed"),
            ("completed=true&completed=false", "completed"),
            ("limit=1&limit=2", "limit"),
            ("after=1&window=2&after=1", "after"),
            ("window=1&window=1", "window"),
        ):
            with self.subTest(query=query):
                self.assertQueryRejected(query, name, "must be given only once")

    def test_rejected_queries_list_nothing(self):
        self.create(title="kept")
        response = self.client.get(f"{TODOS}?limit=1&extra=1")
        self.assertProblem(response, 400, "extra")
        self.assertNotIn(b"kept", response.data)
        self.assertIsNone(response.headers.get("Link"))
