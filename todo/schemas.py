"""Request validation and response shaping: the only place that knows the wire format."""

import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    TypeAdapter,
    ValidationError,
    WithJsonSchema,
)
from pydantic_core import PydanticCustomError

from todo.models.todo import DESCRIPTION_MAX_LENGTH, TITLE_MAX_LENGTH

READ_ONLY_FIELDS = frozenset({"id", "created_at", "updated_at"})
EARLIEST_DEADLINE = datetime(1000, 1, 1, tzinfo=UTC)
LATEST_DEADLINE = datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)
WINDOW_MAX_DAYS = 36500
LIMIT_MAX = 1000

_ISO_DATE_TIME = re.compile(
    r"\d{4}-\d{2}-\d{2}"  # date
    r"(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?"  # optional time, seconds and fraction
    r"(?:Z|[+-]\d{2}:?\d{2})?)?",  # optional offset
    re.IGNORECASE,
)
_QUERY_INTEGER = re.compile(r"[+-]?\d{1,30}")


Model = TypeVar("Model", bound=BaseModel)


class InvalidInput(Exception):
    """A request whose body or query breaks the contract; answered with 400."""

    def __init__(self, detail: str, errors: list[dict[str, str]] | None = None):
        super().__init__(detail)
        self.detail = detail
        self.errors = errors or []


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


def parse_deadline(value: Any) -> datetime:
    """Read an ISO 8601 date or date-time as an aware UTC datetime in the supported range."""
    if not isinstance(value, str) or not _ISO_DATE_TIME.fullmatch(value):
        raise _invalid("must be an ISO 8601 date or date-time, like 2023-02-27T00:00:00")
    out_of_range = _invalid("must be between 1000-01-01T00:00:00 and 9999-12-31T23:59:59 UTC")
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
    Field(min_length=1, max_length=TITLE_MAX_LENGTH, examples=["Watch CSSE6400 Lecture"]),
    AfterValidator(_without_nul),
    AfterValidator(_not_blank),
]
Description = Annotated[
    str,
    Field(max_length=DESCRIPTION_MAX_LENGTH),
    AfterValidator(_without_nul),
]
Deadline = Annotated[
    datetime,
    BeforeValidator(parse_deadline),
    WithJsonSchema(
        {
            "type": "string",
            "description": "ISO 8601 date or date-time; an offset is converted to UTC, "
            "none means UTC.",
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
            "pattern": r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}$",
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

    title: Title = None
    description: Description | None = None
    completed: bool = None
    deadline_at: Deadline | None = None

    def changes(self) -> dict[str, Any]:
        """Return the fields that were sent, with their new values."""
        return self.model_dump(exclude_unset=True)


class TodoOut(BaseModel):
    """A todo as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    title: str
    description: str | None
    completed: bool
    deadline_at: Timestamp | None
    created_at: Timestamp
    updated_at: Timestamp


def _query_integer(value: Any) -> Any:
    if isinstance(value, str) and not _QUERY_INTEGER.fullmatch(value):
        raise _invalid("must be an integer")
    return value


def _query_boolean(value: Any) -> Any:
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise _invalid("must be true or false")


QueryInteger = Annotated[int, BeforeValidator(_query_integer)]


class TodoListQuery(BaseModel):
    """The filters and paging of the todo list."""

    model_config = ConfigDict(extra="forbid")

    completed: Annotated[bool, BeforeValidator(_query_boolean)] | None = Field(
        None, description="Only todos with this state (true or false, any letter case)."
    )
    window: Annotated[QueryInteger, Field(ge=0, le=WINDOW_MAX_DAYS)] | None = Field(
        None, description="Only todos with a deadline at or before now plus this many days."
    )
    limit: Annotated[QueryInteger, Field(ge=1, le=LIMIT_MAX)] | None = Field(
        None, description="At most this many todos; more are linked with rel=next."
    )
    after: QueryInteger | None = Field(None, description="Only todos with a larger id.")


_MESSAGES = {
    "missing": "is required",
    "string_type": "must be a string",
    "bool_type": "must be true or false",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "string_too_short": "must be at least {min_length} character(s) long",
    "string_too_long": "must be at most {max_length} characters long",
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
    names = ", ".join(dict.fromkeys(problem["field"] for problem in errors))
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


def parse_query(arguments: Mapping[str, Iterable[str]]) -> TodoListQuery:
    """Validate the list query; each parameter may be given once."""
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
        return TodoListQuery.model_validate(values)
    except ValidationError as error:
        raise _invalid_input(error, "query", "parameters") from None


_todo_out = TypeAdapter(TodoOut)


def dump_todo(todo: Any) -> dict[str, Any]:
    """Shape a todo (model object or row) for the response."""
    return _todo_out.dump_python(TodoOut.model_validate(todo))


def dump_todo_json(todo: Any) -> bytes:
    """Shape a todo (model object or row) as JSON bytes."""
    return _todo_out.dump_json(TodoOut.model_validate(todo))
