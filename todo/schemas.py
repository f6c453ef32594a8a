"""Request validation and response shaping: the only place that knows the wire format."""

import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError
from sqlalchemy import Boolean

from todo.errors import InvalidInput
from todo.models.todo import DESCRIPTION_MAX_LENGTH, MAX_ID, TITLE_MAX_LENGTH, Todo
from todo.models.user import TOKEN_NAME_MAX_LENGTH, USERNAME_MAX_LENGTH

READ_ONLY_FIELDS = frozenset({"id", "created_at", "updated_at"})
EARLIEST_DEADLINE = datetime(1000, 1, 1, tzinfo=UTC)
LATEST_DEADLINE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
WINDOW_MAX_DAYS = 36500
LIMIT_MAX = 1000

# Patterns in the subset of regular expressions that Python and JSON Schema (ECMA-262) read
# alike: the validators below match them, and the OpenAPI document states them as they are.
# Python's str.strip() whitespace, which ECMA's \s does not quite match.
_BLANK = r"\t\n\v\f\r\x1c-\x20\x85\xa0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000"
NO_NUL_PATTERN = r"^[^\x00]*$"
TITLE_PATTERN = rf"^[^\x00]*[^\x00{_BLANK}][^\x00]*$"
# Any real calendar day of the years 1000 to 9999.
_DAY = (
    r"[1-9][0-9]{3}-(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    r"|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)|02-(?:0[1-9]|1[0-9]|2[0-8]))"
    r"|(?:[1-9][0-9](?:0[48]|[2468][048]|[13579][26])|(?:[2468][048]|[13579][26])00)-02-29"
)
_TIME = r"[Tt ](?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\.[0-9]+)?)?"
_OFFSET = r"[Zz]|[+-](?:[01][0-9]|2[0-3]):?[0-5][0-9]"
# The range is checked once in UTC, which no pattern can say: near its ends an offset can
# bring a value the pattern allows out of it, or the last day of the year 999 into it.
DEADLINE_PATTERN = rf"^(?:{_DAY})(?:{_TIME}(?:{_OFFSET})?)?$"
TIMESTAMP_PATTERN = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}$"
_DEADLINE = re.compile(DEADLINE_PATTERN)
_TIMESTAMP = re.compile(TIMESTAMP_PATTERN)
_ASCII_DIGIT = re.compile(r"[0-9]")
_QUERY_INTEGER = re.compile(r"[+-]?[0-9]+")
# More digits than any 64-bit number has: such a value is past every range a parameter takes.
_QUERY_INTEGER_DIGITS = 20


Model = TypeVar("Model", bound=BaseModel)


def _invalid(message: str) -> PydanticCustomError:
    return PydanticCustomError("invalid", message)


def _without_nul(value: str) -> str:
    if "\x00" in value:
        raise _invalid("must not contain the NUL character")
    return value


def _not_blank(value: str) -> str:
    if not value.strip():
        raise _invalid("must not be blank")
    return value


_NOT_A_DEADLINE = "must be an ISO 8601 date or date-time, like 2023-02-27T00:00:00"


def parse_deadline(value: Any) -> datetime:
    """Read an ISO 8601 date or date-time as an aware UTC datetime in the supported range."""
    if not isinstance(value, str):
        raise _invalid(_NOT_A_DEADLINE)
    out_of_range = _invalid("must be between 1000-01-01T00:00:00 and 9999-12-31T23:59:59 UTC")
    if not _DEADLINE.fullmatch(value):
        # With every digit a 1, a value of the right shape matches: then only its numbers are
        # wrong (a 30th of February, a 25th hour, minutes of 60) or its year is before 1000,
        # which the range check below judges once the offset is applied.
        if not _DEADLINE.fullmatch(_ASCII_DIGIT.sub("1", value)):
            raise _invalid(_NOT_A_DEADLINE)
        if not (value.startswith("0") and _DEADLINE.fullmatch("1" + value[1:])):
            raise _invalid("is not a valid date and time")
    try:
        moment = datetime.fromisoformat(value.upper())
    except ValueError:
        raise _invalid("is not a valid date and time") from None
    try:
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    except OverflowError:
        raise out_of_range from None
    moment = moment.replace(microsecond=0)
    if not EARLIEST_DEADLINE <= moment <= LATEST_DEADLINE:
        raise out_of_range
    return moment


def format_timestamp(value: datetime) -> str:
    """Write a datetime as UTC `YYYY-MM-DDTHH:MM:SS`; a naive one is taken as UTC."""
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None, microsecond=0).isoformat()


Title = Annotated[
    str,
    Field(
        min_length=1,
        max_length=TITLE_MAX_LENGTH,
        examples=["Watch CSSE6400 Lecture"],
        json_schema_extra={"pattern": TITLE_PATTERN, "description": "Not blank; no NUL."},
    ),
    AfterValidator(_without_nul),
    AfterValidator(_not_blank),
]
Description = Annotated[
    str,
    Field(
        max_length=DESCRIPTION_MAX_LENGTH,
        json_schema_extra={"pattern": NO_NUL_PATTERN, "description": "No NUL; null clears it."},
    ),
    AfterValidator(_without_nul),
]
Deadline = Annotated[
    datetime,
    BeforeValidator(parse_deadline),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": DEADLINE_PATTERN,
            "description": "ISO 8601 date or date-time; an offset is converted to UTC, "
            "none means UTC. Between 1000-01-01T00:00:00 and 9999-12-31T23:59:59 UTC.",
            "examples": ["2023-02-27T00:00:00", "2023-02-27", "2023-02-27T10:00:00+10:00"],
        }
    ),
]
Timestamp = Annotated[
    datetime,
    PlainSerializer(format_timestamp, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "pattern": TIMESTAMP_PATTERN,
            "description": "UTC, without offset.",
            "examples": ["2023-02-27T00:00:00"],
        }
    ),
]

_STRICT_INPUT = ConfigDict(strict=True, extra="forbid")


class TodoCreate(BaseModel):
    """The fields a client may send to create a todo."""

    model_config = _STRICT_INPUT

    title: Title
    description: Description | None = None
    completed: bool = False
    deadline_at: Deadline | None = None


class TodoUpdate(BaseModel):
    """A partial update: only the fields sent change.

    Title and completed are not nullable; their default of None only stands for "not sent" and
    is never validated, so an explicit null is still an error.
    """

    model_config = _STRICT_INPUT

    title: Title = None  # type: ignore[assignment]
    description: Description | None = None
    completed: bool = None  # type: ignore[assignment]
    deadline_at: Deadline | None = None

    def changes(self) -> dict[str, Any]:
        """Return the fields that were sent, with their new values."""
        return self.model_dump(exclude_unset=True)


class TodoOut(BaseModel):
    """A todo as the API shows it."""

    model_config = ConfigDict(
        from_attributes=True,
        json_schema_extra={
            "examples": [
                {
                    "id": 1,
                    "title": "Watch CSSE6400 Lecture",
                    "description": "Watch the CSSE6400 lecture on ECHO360 for week 1",
                    "completed": False,
                    "deadline_at": "2023-02-27T00:00:00",
                    "created_at": "2023-02-20T00:00:00",
                    "updated_at": "2023-02-20T00:00:00",
                }
            ]
        },
    )

    id: int
    title: str
    description: str | None
    completed: bool
    deadline_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


def _exact_timestamp(value: Any) -> datetime:
    """Read a timestamp written exactly as the API writes it, as naive UTC (as stored).

    A strict subset of what a deadline may be, in the same range, so that a restored todo is
    written back byte for byte. Parsed here rather than by parse_deadline, which would add
    nothing for this format and costs more, on every line of an import.
    """
    if not isinstance(value, str) or not _TIMESTAMP.fullmatch(value):
        raise _invalid("must be a UTC timestamp written like 2023-02-27T00:00:00")
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise _invalid("is not a valid date and time") from None
    if moment.year < EARLIEST_DEADLINE.year:
        raise _invalid("must be between 1000-01-01T00:00:00 and 9999-12-31T23:59:59 UTC")
    return moment


ExactTimestamp = Annotated[datetime, BeforeValidator(_exact_timestamp)]


class TodoImport(TodoCreate):
    """A todo as exported (TodoOut's JSON), read back by `flask --app todo todos import`.

    The fields a client may send follow the rules of a create; every field of TodoOut must be
    there, and its id and timestamps are kept, in the API's own format.
    """

    id: Annotated[int, Field(ge=1, le=MAX_ID)]
    description: Description | None
    completed: bool
    deadline_at: ExactTimestamp | None
    created_at: ExactTimestamp
    updated_at: ExactTimestamp


class Health(BaseModel):
    """Whether the service and its database answer."""

    status: Literal["ok", "unavailable"]


USERNAME_PATTERN = rf"^[A-Za-z0-9._-]{{1,{USERNAME_MAX_LENGTH}}}$"
PASSWORD_MIN_LENGTH = 8
PASSWORD_MAX_LENGTH = 1024
TOKEN_MAX_DAYS = 3650


class UserCreate(BaseModel):
    """A new account: a username and a password."""

    model_config = _STRICT_INPUT

    username: Annotated[
        str,
        Field(
            pattern=USERNAME_PATTERN,
            examples=["alice"],
            description="1 to 64 of A-Z a-z 0-9 . _ -; compared without regard to case.",
        ),
    ]
    password: Annotated[
        str,
        Field(
            min_length=PASSWORD_MIN_LENGTH,
            max_length=PASSWORD_MAX_LENGTH,
            description="8 to 1024 characters, spaces included.",
            json_schema_extra={"format": "password"},
        ),
    ]


class UserOut(BaseModel):
    """An account as the API shows it (never its password)."""

    id: int
    username: str = Field(description="As first registered.")
    created_at: Timestamp


class TokenCreate(BaseModel):
    """What a new token is called and how long it lasts; both optional."""

    model_config = _STRICT_INPUT

    name: Annotated[str, Field(min_length=1, max_length=TOKEN_NAME_MAX_LENGTH)] | None = Field(
        None, description='Default "token".', examples=["laptop"]
    )
    expires_in_days: Annotated[int, Field(ge=1, le=TOKEN_MAX_DAYS)] | None = Field(
        None, description="Without it the token does not expire."
    )


class TokenOut(BaseModel):
    """A token as listed: never its secret."""

    id: int
    name: str
    created_at: Timestamp
    expires_at: Timestamp | None


class TokenCreated(TokenOut):
    """A new token, with its secret: shown this once."""

    token: str = Field(
        description="Send it as `Authorization: Bearer <token>`. The server keeps only a hash.",
        examples=["todo_3q2ZpWbqF5oHcYgkXc5wG0Zr9Xgq2o8nM0dZp6b7Q1s"],
    )


def _query_integer(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    if not _QUERY_INTEGER.fullmatch(value):
        raise _invalid("must be an integer")
    sign = -1 if value.startswith("-") else 1
    digits = value.lstrip("+-").lstrip("0") or "0"
    # A huge number is read as one just past 64 bits, not parsed digit by digit: `after` then
    # gives an empty page and `limit` or `window` is out of range, as for any large number.
    if len(digits) > _QUERY_INTEGER_DIGITS:
        return sign * 10**_QUERY_INTEGER_DIGITS
    return sign * int(digits)


def _query_boolean(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _invalid("must be true or false")


QueryInteger = Annotated[int, BeforeValidator(_query_integer)]

# Bounds go on the int, before the validator wraps it: after it they would still be checked,
# but would reach the JSON schema as `ge`/`le`, which no client reads, not minimum/maximum.
Window = Annotated[int, Field(ge=0, le=WINDOW_MAX_DAYS), BeforeValidator(_query_integer)]
Limit = Annotated[int, Field(ge=1, le=LIMIT_MAX), BeforeValidator(_query_integer)]


class TodoListQuery(BaseModel):
    """The filters and paging of the todo list."""

    model_config = ConfigDict(extra="forbid")

    completed: Annotated[bool, BeforeValidator(_query_boolean)] | None = Field(
        None, description="Only todos with this state (true or false, any letter case)."
    )
    window: Window | None = Field(
        None, description="Only todos with a deadline at or before now plus this many days."
    )
    limit: Limit | None = Field(
        None, description="At most this many todos; more are linked with rel=next."
    )
    after: QueryInteger | None = Field(None, description="Only todos with a larger id.")


# The contract's bound on a sync cursor's length (todo.sync reads it).
CURSOR_MAX_LENGTH = 200
CHANGES_LIMIT_DEFAULT = 100


class ChangesQuery(BaseModel):
    """Where a sync starts, and how many changes one answer may hold."""

    model_config = ConfigDict(extra="forbid")

    since: str | None = Field(
        None,
        max_length=CURSOR_MAX_LENGTH,
        description="The cursor of the last answer applied; without it (or empty), every "
        "todo as an upsert.",
    )
    limit: Limit = Field(
        CHANGES_LIMIT_DEFAULT, description="At most this many changes in the answer."
    )


class UpsertChange(BaseModel):
    """A todo to store (or replace) as it is now."""

    op: Literal["upsert"]
    todo: TodoOut


class DeleteChange(BaseModel):
    """A todo that was deleted: drop it (ignore an id that you never had)."""

    op: Literal["delete"]
    id: int


Change = Annotated[UpsertChange | DeleteChange, Field(discriminator="op")]


class ChangesOut(BaseModel):
    """What changed after a cursor, each todo at most once, in the order to apply."""

    changes: list[Change]
    cursor: str = Field(
        max_length=CURSOR_MAX_LENGTH,
        description="Opaque: store it and send it back as since to continue from here.",
    )
    more: bool = Field(description="Another call with this cursor has more right now.")


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
    # Usernames are the only field checked by a pattern (USERNAME_PATTERN).
    "string_pattern_mismatch": "must be 1 to 64 characters from A-Z a-z 0-9 . _ -",
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
}


def _field_errors(error: ValidationError, unknown: str) -> list[dict[str, str]]:
    problems = []
    for item in error.errors(include_url=False, include_input=False):
        field = ".".join(str(part) for part in item["loc"])
        if item["type"] == "extra_forbidden":
            message = "cannot be set" if field in READ_ONLY_FIELDS else unknown
        elif item["type"] in _MESSAGES:
            message = _MESSAGES[item["type"]].format(**item.get("ctx", {}))
        else:
            message = item["msg"]
        problems.append({"field": field, "message": message})
    return sorted(problems, key=lambda problem: problem["field"])


def _invalid_input(error: ValidationError, where: str, things: str) -> InvalidInput:
    unknown = "unknown field" if things == "fields" else "unknown parameter"
    errors = _field_errors(error, unknown)
    names = ", ".join(dict.fromkeys(problem["field"] or '""' for problem in errors))
    if all(problem["message"] in (unknown, "cannot be set") for problem in errors):
        detail = f"The {where} has {things} that cannot be set: {names}"
        if things != "fields":
            detail = f"The {where} has unknown {things}: {names}"
    else:
        detail = f"The {where} has invalid {things}: {names}"
    return InvalidInput(detail, errors)


def parse_body(model: type[Model], body: bytes) -> Model:
    """Validate a JSON request body against a model."""
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise InvalidInput(f"The request body is not valid JSON: {error}") from None
    if not isinstance(document, dict):
        raise InvalidInput("The request body must be a JSON object")
    try:
        return model.model_validate(document)
    except ValidationError as error:
        raise _invalid_input(error, "request body", "fields") from None


def parse_query(model: type[Model], arguments: Mapping[str, Iterable[str]]) -> Model:
    """Validate a query against its model; each parameter may be given once."""
    values: dict[str, str] = {}
    errors = []
    for name, given in arguments.items():
        given = list(given)
        if len(given) > 1:
            errors.append({"field": name, "message": "must be given only once"})
        values[name] = given[0]
    if errors:
        names = ", ".join(problem["field"] for problem in errors)
        raise InvalidInput(f"The query has repeated parameters: {names}", errors)
    try:
        return model.model_validate(values)
    except ValidationError as error:
        raise _invalid_input(error, "query", "parameters") from None


# Stored datetimes are naive UTC: orjson then writes exactly YYYY-MM-DDTHH:MM:SS.
_OUTPUT_OPTIONS = orjson.OPT_OMIT_MICROSECONDS
# The stored row's public columns, in the model's order; internal ones are left out.
OUTPUT_FIELDS = tuple(
    column.key for column in Todo.__table__.columns if not column.info.get("internal")
)


def _compile_row_reader(
    entry: str = "{todo}",
) -> Callable[[Iterable[Sequence[Any]]], list[dict[str, Any]]]:
    """Build the function that turns stored rows into the output's objects: each the `entry`
    written around the todo's object (`{todo}`) and its row's values (`_0` and on).

    It is written from the model's columns once, as namedtuple and dataclasses write their
    methods: one list comprehension with a dict display, which costs half as much per row as
    a dict built from the names in a loop. SQLite and MariaDB return booleans as 0 or 1.
    """
    columns = list(Todo.__table__.columns)
    values = [
        f"_{index} == 1" if isinstance(column.type, Boolean) else f"_{index}"
        for index, column in enumerate(columns)
    ]
    items = ", ".join(
        f"{column.key!r}: {value}"
        for column, value in zip(columns, values, strict=True)
        if column.key in OUTPUT_FIELDS
    )
    row = ", ".join(f"_{index}" for index in range(len(columns)))
    return eval(f"lambda rows: [{entry.format(todo=f'{{{items}}}')} for ({row}) in rows]")


_read_rows = _compile_row_reader()
# Sync's changes: a todo's row, or a deletion's (the todo's id, and no title: todo.sync).
_ID, _TITLE = (Todo.__table__.columns.keys().index(key) for key in ("id", "title"))
_read_changes = _compile_row_reader(
    f"{{{{'op': 'delete', 'id': _{_ID}}}}} if _{_TITLE} is None"
    " else {{'op': 'upsert', 'todo': {todo}}}"
)


def todo_json(todo: Sequence[Any]) -> bytes:
    """Write one stored todo as the JSON of TodoOut."""
    return orjson.dumps(_read_rows((todo,))[0], option=_OUTPUT_OPTIONS)


def todos_json(todos: Iterable[Sequence[Any]]) -> bytes:
    """Write todos, as the database driver returns their rows, as a JSON array of TodoOut.

    A timestamp may come as stored text (SQLite keeps the API's own format) or as a naive
    UTC datetime; both write the same JSON.
    """
    return orjson.dumps(_read_rows(todos), option=_OUTPUT_OPTIONS)


def todos_json_stream(batches: Iterable[Sequence[Sequence[Any]]]) -> Iterator[bytes]:
    """Write batches of todos as one JSON array, a batch at a time, for a streamed response."""
    yield b"["
    separator = b""
    for batch in batches:
        if batch:
            # Each batch's own array, without its brackets.
            yield separator + todos_json(batch)[1:-1]
            separator = b","
    yield b"]"


def changes_json(changes: Iterable[Sequence[Any]], cursor: str, more: bool) -> bytes:
    """Write sync's answer as the JSON of ChangesOut, its changes as todo.sync reads them."""
    return orjson.dumps(
        {"changes": _read_changes(changes), "cursor": cursor, "more": more},
        option=_OUTPUT_OPTIONS,
    )


def record_json(record: Mapping[str, Any]) -> bytes:
    """Write a user or token, as todo.accounts returns them, as JSON."""
    return orjson.dumps(record, option=_OUTPUT_OPTIONS)


def records_json(records: Iterable[Mapping[str, Any]]) -> bytes:
    """Write users or tokens, as todo.accounts returns them, as a JSON array."""
    return orjson.dumps(list(records), option=_OUTPUT_OPTIONS)
