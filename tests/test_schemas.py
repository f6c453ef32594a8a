"""The wire format without HTTP: body and query validation, deadlines and timestamps."""

import unittest
from datetime import UTC, datetime, timedelta, timezone

import orjson
from pydantic_core import PydanticCustomError

from todo.errors import InvalidInput
from todo.schemas import (
    OUTPUT_FIELDS,
    TodoCreate,
    TodoListQuery,
    TodoOut,
    TodoUpdate,
    format_timestamp,
    parse_body,
    parse_deadline,
    parse_query,
    todo_json,
    todos_json,
    todos_json_stream,
)
from todo.store import ROW_KEYS, StoredTodo

OUT_OF_RANGE = "must be between 1000-01-01T00:00:00 and 9999-12-31T23:59:59 UTC"


class TestParseDeadline(unittest.TestCase):
    def test_date_means_midnight_utc(self):
        self.assertEqual(parse_deadline("2023-02-27"), datetime(2023, 2, 27, tzinfo=UTC))

    def test_value_without_offset_is_taken_as_utc(self):
        self.assertEqual(
            parse_deadline("2023-02-27T10:30:00"), datetime(2023, 2, 27, 10, 30, tzinfo=UTC)
        )

    def test_offsets_are_converted_to_utc(self):
        expected = datetime(2023, 2, 27, tzinfo=UTC)
        for value in (
            "2023-02-27T10:00:00+10:00",
            "2023-02-26T20:00:00-04:00",
            "2023-02-27T00:00:00Z",
            "2023-02-27T00:00:00z",
            "2023-02-27T00:00:00+00:00",
            "2023-02-27T05:30:00+0530",
        ):
            with self.subTest(value=value):
                moment = parse_deadline(value)
                self.assertEqual(moment, expected)
                self.assertEqual(moment.utcoffset(), timedelta(0))

    def test_fraction_of_a_second_is_dropped(self):
        for value in (
            "2023-02-27T00:00:59.999999",
            "2023-02-27T00:00:59.5",
            "2023-02-27T00:00:59.1Z",
        ):
            with self.subTest(value=value):
                self.assertEqual(parse_deadline(value), datetime(2023, 2, 27, 0, 0, 59, tzinfo=UTC))

    def test_space_separator_lower_case_and_minutes_only_are_read(self):
        expected = datetime(2023, 2, 27, 8, 15, tzinfo=UTC)
        for value in ("2023-02-27 08:15:00", "2023-02-27t08:15:00", "2023-02-27T08:15"):
            with self.subTest(value=value):
                self.assertEqual(parse_deadline(value), expected)

    def test_extremes_of_the_range_are_accepted(self):
        self.assertEqual(parse_deadline("1000-01-01T00:00:00"), datetime(1000, 1, 1, tzinfo=UTC))
        self.assertEqual(
            parse_deadline("9999-12-31T23:59:59.999999"),
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        )
        self.assertEqual(
            parse_deadline("1000-01-01T10:00:00+10:00"), datetime(1000, 1, 1, tzinfo=UTC)
        )
        self.assertEqual(
            parse_deadline("9999-12-31T21:59:59-02:00"),
            datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC),
        )

    def assertDeadlineError(self, value, message: str | None = None) -> None:  # noqa: N802
        with self.assertRaises(PydanticCustomError) as caught:
            parse_deadline(value)
        if message is not None:
            self.assertEqual(caught.exception.message(), message)

    def test_values_outside_the_range_once_in_utc_are_errors(self):
        for value in (
            "0999-12-31T23:59:59",
            "1000-01-01T00:00:00+01:00",
            "0001-01-01T00:00:00+00:01",
            "9999-12-31T23:00:00-02:00",
            "9999-12-31T23:59:59-23:59",
        ):
            with self.subTest(value=value):
                self.assertDeadlineError(value, OUT_OF_RANGE)

    def test_impossible_dates_and_times_are_errors(self):
        for value in (
            "2023-02-29",
            "2023-02-30",
            "2023-13-01",
            "2023-02-27T24:00:00",
            "0000-01-01",
        ):
            with self.subTest(value=value):
                self.assertDeadlineError(value, "is not a valid date and time")

    def test_anything_but_an_iso_string_is_an_error(self):
        format_message = "must be an ISO 8601 date or date-time, like 2023-02-27T00:00:00"
        for value in (
            None,
            20230227,
            1.5,
            True,
            [],
            {},
            datetime(2023, 2, 27),
            "",
            "20230227",
            "2023-02-27T00:00:00+10",
            "27/02/2023",
            "2023-02-27T00:00:00 ",
            "\u0662\u0660\u0662\u0663-02-27",
        ):
            with self.subTest(value=value):
                self.assertDeadlineError(value, format_message)


class TestFormatTimestamp(unittest.TestCase):
    def test_utc_is_written_without_offset_or_fraction(self):
        moment = datetime(2023, 2, 27, 1, 2, 3, 999999, tzinfo=UTC)
        self.assertEqual(format_timestamp(moment), "2023-02-27T01:02:03")

    def test_other_zones_are_converted_to_utc(self):
        moment = datetime(2023, 2, 27, 10, 0, tzinfo=timezone(timedelta(hours=10)))
        self.assertEqual(format_timestamp(moment), "2023-02-27T00:00:00")

    def test_naive_values_are_taken_as_utc(self):
        self.assertEqual(format_timestamp(datetime(2023, 2, 27)), "2023-02-27T00:00:00")

    def test_extremes_keep_four_digit_years(self):
        self.assertEqual(format_timestamp(datetime(1000, 1, 1)), "1000-01-01T00:00:00")
        self.assertEqual(
            format_timestamp(datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)), "9999-12-31T23:59:59"
        )

    def test_parsed_deadlines_format_back_to_the_same_string(self):
        for value in ("2023-02-27T00:00:00", "1000-01-01T00:00:00", "9999-12-31T23:59:59"):
            with self.subTest(value=value):
                self.assertEqual(format_timestamp(parse_deadline(value)), value)


class TestParseBody(unittest.TestCase):
    def assertInvalid(self, model, body: bytes) -> InvalidInput:  # noqa: N802
        with self.assertRaises(InvalidInput) as caught:
            parse_body(model, body)
        self.assertTrue(caught.exception.detail)
        return caught.exception

    def messages(self, model, body: bytes) -> dict[str, str]:
        return {e["field"]: e["message"] for e in self.assertInvalid(model, body).errors}

    def test_create_reads_every_field(self):
        todo = parse_body(
            TodoCreate,
            b'{"title": "T", "description": "D", "completed": true, "deadline_at": "2023-02-27"}',
        )
        self.assertEqual(
            todo.model_dump(),
            {
                "title": "T",
                "description": "D",
                "completed": True,
                "deadline_at": datetime(2023, 2, 27, tzinfo=UTC),
            },
        )

    def test_create_defaults_the_optional_fields(self):
        todo = parse_body(TodoCreate, b'{"title": "T"}')
        self.assertEqual(
            todo.model_dump(),
            {"title": "T", "description": None, "completed": False, "deadline_at": None},
        )

    def test_text_is_kept_exactly(self):
        todo = parse_body(TodoCreate, '{"title": "  Ünïcødé 🎉  "}'.encode())
        self.assertEqual(todo.title, "  Ünïcødé 🎉  ")

    def test_update_changes_only_the_fields_sent(self):
        self.assertEqual(parse_body(TodoUpdate, b"{}").changes(), {})
        self.assertEqual(
            parse_body(TodoUpdate, b'{"completed": false}').changes(), {"completed": False}
        )
        self.assertEqual(
            parse_body(TodoUpdate, b'{"description": null, "deadline_at": null}').changes(),
            {"description": None, "deadline_at": None},
        )

    def test_update_cannot_null_title_or_completed(self):
        self.assertEqual(
            self.messages(TodoUpdate, b'{"title": null, "completed": null}'),
            {"title": "must be a string", "completed": "must be true or false"},
        )

    def test_every_field_problem_is_listed_in_field_order(self):
        error = self.assertInvalid(
            TodoCreate,
            b'{"title": " ", "description": 1, "completed": 1, "deadline_at": "x",'
            b' "id": 1, "z": 0}',
        )
        self.assertEqual(
            [e["field"] for e in error.errors],
            ["completed", "deadline_at", "description", "id", "title", "z"],
        )
        self.assertEqual(
            error.detail,
            "The request body has invalid fields: "
            "completed, deadline_at, description, id, title, z",
        )

    def test_fields_that_cannot_be_set_are_told_apart(self):
        error = self.assertInvalid(TodoUpdate, b'{"updated_at": 1, "extra": 2}')
        self.assertEqual(
            error.errors,
            [
                {"field": "extra", "message": "unknown field"},
                {"field": "updated_at", "message": "cannot be set"},
            ],
        )
        self.assertEqual(
            error.detail, "The request body has fields that cannot be set: extra, updated_at"
        )

    def test_title_rules(self):
        for body, message in (
            (b"{}", "is required"),
            (b'{"title": ""}', "must be at least 1 character(s) long"),
            (b'{"title": " \\t "}', "must not be blank"),
            (b'{"title": "a\\u0000"}', "must not contain the NUL character"),
            (b'{"title": "' + b"x" * 81 + b'"}', "must be at most 80 characters long"),
            (b'{"title": 1}', "must be a string"),
        ):
            with self.subTest(body=body[:30]):
                self.assertEqual(self.messages(TodoCreate, body), {"title": message})

    def test_description_rules(self):
        for body, message in (
            (b'{"description": "' + b"x" * 121 + b'"}', "must be at most 120 characters long"),
            (b'{"description": "\\u0000"}', "must not contain the NUL character"),
            (b'{"description": false}', "must be a string"),
        ):
            with self.subTest(body=body[:30]):
                self.assertEqual(self.messages(TodoUpdate, body), {"description": message})

    def test_completed_accepts_only_json_booleans(self):
        for value in (b'"true"', b"1", b"0", b"null", b"1.0"):
            with self.subTest(value=value):
                self.assertEqual(
                    self.messages(TodoUpdate, b'{"completed": ' + value + b"}"),
                    {"completed": "must be true or false"},
                )

    def test_invalid_json_is_reported_as_such(self):
        for body in (b"", b"NaN", b'{"title": "\\ud800"}', b"\xff", b"[" * 5000, b"{} {}"):
            with self.subTest(body=body[:20]):
                error = self.assertInvalid(TodoCreate, body)
                self.assertTrue(error.detail.startswith("The request body is not valid JSON"))
                self.assertEqual(error.errors, [])

    def test_json_that_is_not_an_object_is_reported_as_such(self):
        for body in (b"[]", b"null", b"1", b'"x"', b"true"):
            with self.subTest(body=body):
                error = self.assertInvalid(TodoCreate, body)
                self.assertEqual(error.detail, "The request body must be a JSON object")

    def test_duplicate_keys_keep_the_last_value(self):
        self.assertEqual(parse_body(TodoCreate, b'{"title": 1, "title": "last"}').title, "last")


class TestParseQuery(unittest.TestCase):
    def assertInvalid(self, arguments) -> InvalidInput:  # noqa: N802
        with self.assertRaises(InvalidInput) as caught:
            parse_query(TodoListQuery, arguments)
        return caught.exception

    def test_no_parameters_means_no_filters(self):
        self.assertEqual(parse_query(TodoListQuery, {}), TodoListQuery())
        self.assertEqual(
            parse_query(TodoListQuery, {}).model_dump(),
            {"completed": None, "window": None, "limit": None, "after": None},
        )

    def test_parameters_are_read(self):
        query = parse_query(
            TodoListQuery,
            {"completed": ["FaLsE"], "window": ["7"], "limit": ["1000"], "after": ["-5"]},
        )
        self.assertEqual(
            (query.completed, query.window, query.limit, query.after), (False, 7, 1000, -5)
        )

    def test_numbers_beyond_64_bits_are_past_every_range(self):
        self.assertGreater(parse_query(TodoListQuery, {"after": ["9" * 5000]}).after, 2**63)
        self.assertLess(parse_query(TodoListQuery, {"after": ["-" + "9" * 5000]}).after, 0)
        self.assertEqual(parse_query(TodoListQuery, {"after": ["0" * 5000 + "7"]}).after, 7)
        for name in ("window", "limit"):
            with self.subTest(name=name):
                error = self.assertInvalid({name: ["9" * 5000]})
                self.assertEqual(error.errors[0]["field"], name)
                self.assertTrue(error.errors[0]["message"].startswith("must be at most"))

    def test_bounds(self):
        for arguments, message in (
            ({"window": ["-1"]}, "must be at least 0"),
            ({"window": ["36501"]}, "must be at most 36500"),
            ({"limit": ["0"]}, "must be at least 1"),
            ({"limit": ["1001"]}, "must be at most 1000"),
            ({"limit": ["1.5"]}, "must be an integer"),
            ({"after": [""]}, "must be an integer"),
            ({"after": ["١"]}, "must be an integer"),
            ({"completed": ["1"]}, "must be true or false"),
        ):
            with self.subTest(arguments=arguments):
                error = self.assertInvalid(arguments)
                self.assertEqual(
                    error.errors, [{"field": next(iter(arguments)), "message": message}]
                )
                self.assertEqual(
                    error.detail, f"The query has invalid parameters: {next(iter(arguments))}"
                )

    def test_unknown_parameters_are_named(self):
        error = self.assertInvalid({"sort": ["id"], "limit": ["2"], "page": ["1"]})
        self.assertEqual(
            error.errors,
            [
                {"field": "page", "message": "unknown parameter"},
                {"field": "sort", "message": "unknown parameter"},
            ],
        )
        self.assertEqual(error.detail, "The query has unknown parameters: page, sort")

    def test_repeated_parameters_are_named(self):
        error = self.assertInvalid({"limit": ["1", "1"], "after": ["2"], "window": ["1", "2"]})
        self.assertEqual(
            error.errors,
            [
                {"field": "limit", "message": "must be given only once"},
                {"field": "window", "message": "must be given only once"},
            ],
        )
        self.assertEqual(error.detail, "The query has repeated parameters: limit, window")


def stored(**values) -> StoredTodo:
    """Make a stored row from the values of its columns (no owner unless given)."""
    return StoredTodo.from_values({"owner_id": None, "change_stream": 0, "change_seq": 0} | values)


class TestTodoOutput(unittest.TestCase):
    VALUES = {
        "id": 1,
        "title": "Watch CSSE6400 Lecture",
        "description": None,
        "completed": False,
        "deadline_at": datetime(2023, 2, 27),
        "created_at": datetime(2023, 2, 20, 0, 0, 0, 123456),
        "updated_at": datetime(2023, 2, 20, 1, 0),
        "version": 3,
    }
    TODO = stored(**VALUES)
    EXPECTED = {
        "id": 1,
        "title": "Watch CSSE6400 Lecture",
        "description": None,
        "completed": False,
        "deadline_at": "2023-02-27T00:00:00",
        "created_at": "2023-02-20T00:00:00",
        "updated_at": "2023-02-20T01:00:00",
    }

    def test_json_has_the_fields_in_the_documented_order(self):
        self.assertEqual(
            todo_json(self.TODO),
            b'{"id":1,"title":"Watch CSSE6400 Lecture","description":null,"completed":false,'
            b'"deadline_at":"2023-02-27T00:00:00","created_at":"2023-02-20T00:00:00",'
            b'"updated_at":"2023-02-20T01:00:00"}',
        )

    def test_output_is_what_the_documented_model_describes(self):
        shaped = TodoOut.model_validate_json(todo_json(self.TODO))
        self.assertEqual(shaped.model_dump(mode="json"), self.EXPECTED)
        self.assertEqual(list(TodoOut.model_fields), list(self.EXPECTED))

    def test_encoder_writes_every_field_of_the_documented_model_and_nothing_else(self):
        # The encoder writes the row's public columns; TodoOut documents the output. A column
        # added to the model without its documentation (or the reverse) fails here.
        self.assertEqual(OUTPUT_FIELDS, tuple(TodoOut.model_fields))
        self.assertEqual(tuple(orjson.loads(todo_json(self.TODO))), tuple(TodoOut.model_fields))

    def test_internal_columns_are_read_but_not_written(self):
        internal = {"version", "owner_id", "change_stream", "change_seq"}
        self.assertEqual(set(ROW_KEYS) - set(OUTPUT_FIELDS), internal)
        self.assertFalse(internal & set(orjson.loads(todo_json(self.TODO))))

    def test_rows_as_each_engine_returns_them_write_the_same_json(self):
        as_sqlite = stored(
            **self.VALUES
            | {
                "completed": 0,
                "deadline_at": "2023-02-27T00:00:00",
                "created_at": "2023-02-20T00:00:00",
                "updated_at": "2023-02-20T01:00:00",
            }
        )
        as_mariadb = stored(**self.VALUES | {"completed": 0})
        for row in (as_sqlite, as_mariadb):
            with self.subTest(row=row):
                self.assertEqual(todo_json(row), todo_json(self.TODO))
                shaped = TodoOut.model_validate_json(todo_json(row))
                self.assertEqual(shaped.model_dump(mode="json"), self.EXPECTED)

    def test_list_is_an_array_of_the_same_objects(self):
        second = stored(**self.VALUES | {"id": 2, "deadline_at": None, "completed": True})
        self.assertEqual(
            orjson.loads(todos_json([self.TODO, second])),
            [self.EXPECTED, self.EXPECTED | {"id": 2, "deadline_at": None, "completed": True}],
        )
        self.assertEqual(todos_json([]), b"[]")

    def test_streamed_batches_join_into_one_array(self):
        rows = [stored(**self.VALUES | {"id": number}) for number in range(1, 6)]
        streamed = b"".join(todos_json_stream([rows[:2], [], rows[2:]]))
        self.assertEqual(orjson.loads(streamed), orjson.loads(todos_json(rows)))
        self.assertEqual(b"".join(todos_json_stream([])), b"[]")

    def test_missing_deadline_is_null(self):
        todo = stored(**self.VALUES | {"deadline_at": None})
        self.assertIsNone(orjson.loads(todo_json(todo))["deadline_at"])
