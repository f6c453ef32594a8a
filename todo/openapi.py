"""The OpenAPI 3.1 document: built from the route table and what each view declares.

A view states its inputs and answers with `@documented(...)` beside it; this module holds the
pieces they share (headers, parameters, problem answers) and puts the document together.
"""

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from importlib.metadata import metadata, version
from inspect import getdoc
from typing import Any, Literal, TypeVar

from flask import Flask
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema, models_json_schema
from werkzeug.routing import Rule

from todo.accounts import TOKEN_PATTERN, TOKEN_PREFIX
from todo.auth import PUBLIC_ENDPOINTS, REALM
from todo.errors import PROBLEM_JSON
from todo.idempotency import HEADER as IDEMPOTENCY_KEY
from todo.idempotency import KEY_PATTERN
from todo.limits import EXEMPT_ENDPOINTS
from todo.models.idempotency import KEY_MAX_LENGTH
from todo.models.todo import MAX_ID
from todo.schemas import (
    ChangesOut,
    Health,
    TodoCreate,
    TodoOut,
    TodoUpdate,
    TokenCreate,
    TokenCreated,
    TokenOut,
    UserCreate,
    UserOut,
)
from todo.views.http import ENTITY_TAGS_PATTERN, ETAG_PATTERN

API_PREFIX = "/api/v1"
CONTACT = {"name": "The maintainers of the todo package"}
# The package's declared license; the document says plainly when there is none.
LICENSE = {"name": metadata("todo")["License-Expression"] or "No license declared"}
# The blueprints whose routes are the API: the index, todos and health, and (AUTH token)
# accounts. Only their routes under the prefix are in the document (the root's index is not).
API_BLUEPRINTS = ("index", "api", "accounts")
# The schema of each path argument, by name.
PATH_PARAMETERS = {"todo_id": "TodoId", "token_id": "TokenId"}
SCHEMA_REF = "#/components/schemas/{model}"
# Methods Flask answers on its own for every route; they are not operations of the API.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})
_METHOD_ORDER = {
    method: index for index, method in enumerate(("GET", "POST", "PUT", "PATCH", "DELETE"))
}
_EXTENSION_KEY = "todo.openapi"
_RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>]+)>")
View = TypeVar("View", bound=Callable[..., Any])


class FieldProblem(BaseModel):
    """One field or parameter that broke a rule."""

    field: str = Field(description="The field, query parameter or header at fault.")
    message: str = Field(description="What is wrong with it.")


class Problem(BaseModel):
    """RFC 9457 problem details: every error answer of the API."""

    type: str = Field(description="Always about:blank: the status code says it all.")
    title: str = Field(description="The status code's reason phrase.")
    status: int = Field(ge=400, le=599, description="The HTTP status code.")
    detail: str = Field(description="One human sentence about this occurrence.")
    errors: list[FieldProblem] = Field(
        default_factory=list, description="Every field problem, on validation errors only."
    )


class IndexLinks(BaseModel):
    """Where to go from the index: paths on this host."""

    docs: str = Field(description="The interactive documentation page (HTML).")
    openapi: str = Field(description="This OpenAPI document.")
    todos: str = Field(description="The todos.")
    health: str = Field(description="The health check.")
    users: str | SkipJsonSchema[None] = Field(
        default=None, description="Registering and the caller's account; AUTH token only."
    )
    tokens: str | SkipJsonSchema[None] = Field(
        default=None, description="Logging in (makes a token) and the tokens; AUTH token only."
    )


class Index(BaseModel):
    """What the index at / and /api/v1 answers: links to the documentation and the API."""

    links: IndexLinks


# Schemas of the components, each with the mode in which the API uses it.
Models = tuple[tuple[type[BaseModel], Literal["validation", "serialization"]], ...]
MODELS: Models = (
    (TodoCreate, "validation"),
    (TodoUpdate, "validation"),
    (TodoOut, "serialization"),
    (Problem, "serialization"),
    (Health, "serialization"),
    (Index, "serialization"),
    (ChangesOut, "serialization"),
)
# Those of the accounts API, which exists in AUTH token only.
ACCOUNT_MODELS: Models = (
    (UserCreate, "validation"),
    (UserOut, "serialization"),
    (TokenCreate, "validation"),
    (TokenOut, "serialization"),
    (TokenCreated, "serialization"),
)


def ref(name: str, kind: str = "schemas") -> dict[str, str]:
    """Point at a component of the document."""
    return {"$ref": f"#/components/{kind}/{name}"}


def json_content(schema: dict[str, Any], media_type: str = "application/json") -> dict[str, Any]:
    """Describe a body of one media type."""
    return {media_type: {"schema": schema}}


def json_answer(description: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Describe a JSON answer."""
    return {"description": description, "content": json_content(schema)}


def _header(description: str, schema: dict[str, Any], required: bool = False) -> dict[str, Any]:
    return {"description": description, "required": required, "schema": schema}


def _problem(
    status: int, description: str, example: str, **headers: dict[str, Any]
) -> dict[str, Any]:
    """Describe a problem answer of one status, with an example of its own."""
    content = json_content(ref("Problem"), PROBLEM_JSON)
    content[PROBLEM_JSON]["example"] = {
        "type": "about:blank",
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": example,
    }
    response = {"description": description, "content": content}
    if headers:
        response["headers"] = headers
    return response


HEADERS = {
    "ETag": _header(
        "The todo's strong entity tag, which changes whenever the todo does; send it back in "
        "If-None-Match or If-Match.",
        {"type": "string", "pattern": ETAG_PATTERN, "examples": ['"1-1"']},
        required=True,
    ),
    "Location": _header(
        "The new todo's URL.",
        {"type": "string", "format": "uri-reference", "examples": ["/api/v1/todos/1"]},
        required=True,
    ),
    "Link": _header(
        'The next page, as `<URL>; rel="next"`, when `limit` cut the list and more todos follow.',
        {"type": "string", "examples": ['</api/v1/todos?limit=2&after=2>; rel="next"']},
    ),
    "Idempotent-Replayed": _header(
        "Present when this is the remembered answer to an earlier request with the same "
        "Idempotency-Key: the first answer again, even if that todo has changed or gone since.",
        {"type": "string", "enum": ["true"]},
    ),
    "Retry-After": _header(
        "Seconds to wait before trying again.", {"type": "string", "pattern": r"^[0-9]+$"}, True
    ),
}


def _parameters(config: Mapping[str, Any]) -> dict[str, Any]:
    key_hours = config["IDEMPOTENCY_KEY_TTL"] / 3600
    return {
        "TodoId": {
            "name": "todo_id",
            "in": "path",
            "required": True,
            "description": "The todo's id. An id that no todo can have answers as a missing todo "
            "does: 404 (DELETE: 200 with {}).",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
        },
        "IfNoneMatch": {
            "name": "If-None-Match",
            "in": "header",
            "description": "ETags you hold, compared weakly; `*` matches any version. When one "
            "is current, GET answers 304 with no body, and PUT, PATCH and DELETE answer 412 and "
            "change nothing. A malformed value is a 400.",
            "schema": {"type": "string", "pattern": ENTITY_TAGS_PATTERN, "examples": ['"1-1"']},
        },
        "IfMatch": {
            "name": "If-Match",
            "in": "header",
            "description": "ETags you read, compared strongly; `*` matches any version. When "
            "none is current the answer is 412 and nothing changes. A malformed value is a 400.",
            "schema": {"type": "string", "pattern": ENTITY_TAGS_PATTERN, "examples": ['"1-1"']},
        },
        "IfUnmodifiedSince": {
            "name": "If-Unmodified-Since",
            "in": "header",
            "description": "An HTTP-date: when the todo's `updated_at` is later the answer is 412 "
            "and nothing changes. Ignored with If-Match, and when it is not an HTTP-date.",
            "schema": {"type": "string", "examples": ["Mon, 27 Feb 2023 00:00:00 GMT"]},
        },
        "IdempotencyKey": {
            "name": IDEMPOTENCY_KEY,
            "in": "header",
            "description": "Makes retries safe: the same key with the same body answers the first "
            "response again and creates nothing; with another body it answers 422. Keys are kept "
            f"for at least {key_hours:g} hours.",
            "schema": {
                "type": "string",
                "minLength": 1,
                "maxLength": KEY_MAX_LENGTH,
                "pattern": KEY_PATTERN,
                "examples": ["9f1c2a7e-5b4d-4c1e-8f3a-2d6b7e9c0a1f"],
            },
        },
    }


# The parameters of the accounts API (AUTH token only).
ACCOUNT_PARAMETERS = {
    "TokenId": {
        "name": "token_id",
        "in": "path",
        "required": True,
        "description": "The token's id, as listed by GET /tokens.",
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_ID},
    },
}

# The problem answers that several operations share, by status.
_PROBLEMS = {
    400: "BadRequest",
    404: "NotFound",
    411: "LengthRequired",
    412: "PreconditionFailed",
    413: "PayloadTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    501: "NotImplemented",
    503: "Unavailable",
}


def _responses(config: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "BadRequest": _problem(
            400,
            "The request breaks a rule: `detail` says which, `errors` names each field or "
            "parameter.",
            "The request body has fields that cannot be set: extra, id",
        ),
        "NotFound": _problem(404, "There is no todo with this id.", "Todo 7 does not exist."),
        "PreconditionFailed": _problem(
            412,
            "The todo does not meet If-Match, If-None-Match or If-Unmodified-Since; nothing was "
            "changed. The ETag header names the todo's current version: GET it again, or send "
            "that tag in If-Match to retry.",
            "The todo has changed since the version in If-Match.",
            ETag=ref("ETag", "headers"),
        ),
        "LengthRequired": _problem(
            411,
            "The body was sent chunked: send it with a Content-Length (a proxy in front may "
            "turn a chunked upload into one).",
            "Send the request body with a Content-Length, not chunked.",
        ),
        "NotImplemented": _problem(
            501,
            "The body was sent in a transfer coding other than chunked.",
            "The transfer coding 'gzip' is not supported.",
        ),
        "PayloadTooLarge": _problem(
            413,
            f"The body is larger than the limit of {config['MAX_CONTENT_LENGTH']} bytes.",
            f"The request body is larger than the limit of {config['MAX_CONTENT_LENGTH']} bytes.",
        ),
        "UnsupportedMediaType": _problem(
            415,
            "The body was not sent as `Content-Type: application/json`.",
            "Send the request body as JSON: Content-Type: application/json.",
        ),
        "Unavailable": _problem(
            503,
            "The database is unavailable; retry after the given delay.",
            "The database is unavailable; try again shortly.",
            **{"Retry-After": ref("Retry-After", "headers")},
        ),
    }


TOO_MANY_REQUESTS = _problem(
    429,
    "Too many requests or failed logins; retry after the given delay.",
    "Too many requests; retry after the given delay.",
    **{"Retry-After": ref("Retry-After", "headers")},
)

# AUTH token: how a client shows who it is (todo.auth), as security schemes of the document.
SECURITY_SCHEMES = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": f"opaque, starting with {TOKEN_PREFIX}",
        "description": "A token from POST /tokens, sent as `Authorization: Bearer <token>`. "
        f"Tokens match `{TOKEN_PATTERN}`; they last until revoked (DELETE /tokens/{{token_id}}) "
        "or until they expire.",
    },
    "basic": {
        "type": "http",
        "scheme": "basic",
        "description": "A registered username and its password, `username:password` in UTF-8; "
        "only logging in (POST /tokens) takes them.",
    },
}
# What each kind of operation (Operation.auth) requires: public ones say so explicitly.
SECURITY: dict[str, list[dict[str, list[str]]]] = {
    "bearer": [{"bearer": []}],
    "basic": [{"basic": []}],
    "none": [],
}
# The challenges todo.auth.Unauthenticated writes, exactly.
BEARER_CHALLENGES = [f'Bearer realm="{REALM}"', f'Bearer realm="{REALM}", error="invalid_token"']
BASIC_CHALLENGE = f'Basic realm="{REALM}"'
ACCOUNT_HEADERS = {
    "BearerChallenge": _header(
        f"`{BEARER_CHALLENGES[0]}` when no bearer token was sent (another scheme counts as "
        f"none); `{BEARER_CHALLENGES[1]}` when the token is unknown, malformed, expired or "
        "revoked (RFC 6750).",
        {"type": "string", "enum": BEARER_CHALLENGES},
        required=True,
    ),
    "BasicChallenge": _header(
        "Asks for HTTP Basic credentials (RFC 7617).",
        {"type": "string", "enum": [BASIC_CHALLENGE]},
        required=True,
    ),
}
ACCOUNT_RESPONSES = {
    "Unauthenticated": _problem(
        401,
        "No bearer token was sent, or it is unknown, malformed, expired or revoked.",
        "The token is unknown, malformed, expired or revoked.",
        **{"WWW-Authenticate": ref("BearerChallenge", "headers")},
    ),
    "LoginFailed": _problem(
        401,
        "The username or the password is wrong or missing; an unknown username gets the same "
        "answer. Failed attempts count towards the login throttle (429).",
        "Send a registered username and its password with HTTP Basic authentication.",
        **{"WWW-Authenticate": ref("BasicChallenge", "headers")},
    ),
}
# The 401 of an operation that requires a bearer token or HTTP Basic.
_UNAUTHENTICATED = {"bearer": "Unauthenticated", "basic": "LoginFailed"}

_TOKEN_MODE_DESCRIPTION = (
    "\n\nThis service knows its clients by their tokens (the setting `AUTH` is `token`): "
    "every operation needs `Authorization: Bearer <token>` but the health check, registering "
    "(POST /users) and logging in (POST /tokens, with HTTP Basic), which makes a token. Each "
    "user sees and changes only their own todos; another user's todo is answered as a missing "
    "one. With `AUTH` `none` (the default) there are no accounts: every client shares one list, "
    "and /users and /tokens do not exist."
)


def removed_answer(description: str, schema: str, nothing: str) -> dict[str, Any]:
    """Describe the answer of an idempotent DELETE: what was removed, or `{}` for nothing."""
    empty = {"type": "object", "maxProperties": 0, "description": nothing}
    return json_answer(description, {"oneOf": [ref(schema), empty]})


def todo_answer(
    description: str, *, headers: Mapping[str, Any] | None = None, links: bool = False
) -> dict[str, Any]:
    """Describe an answer that carries one todo and its ETag (and links to what follows)."""
    answer: dict[str, Any] = {
        "description": description,
        "headers": {"ETag": ref("ETag", "headers"), **(headers or {})},
        "content": json_content(ref("TodoOut")),
    }
    if links:
        answer["links"] = _todo_links()
    return answer


def _todo_links() -> dict[str, Any]:
    todo_id = {"todo_id": "$response.body#/id"}
    unchanged = todo_id | {"header.If-Match": "$response.header.ETag"}
    return {
        "GetTodo": {"operationId": "get_todo", "parameters": todo_id},
        "GetTodoIfChanged": {
            "operationId": "get_todo",
            "parameters": todo_id | {"header.If-None-Match": "$response.header.ETag"},
        },
        "UpdateTodoIfUnchanged": {"operationId": "update_todo_put", "parameters": unchanged},
        "PatchTodoIfUnchanged": {"operationId": "update_todo_patch", "parameters": unchanged},
        "DeleteTodo": {"operationId": "delete_todo", "parameters": todo_id},
    }


@dataclass(frozen=True)
class Operation:
    """What the route table cannot tell about a view: its inputs and its answers."""

    responses: dict[int, dict[str, Any]]
    problems: dict[int, str | None]
    tag: str
    body: type[BaseModel] | None
    query: type[BaseModel] | None
    headers: tuple[str, ...]
    description: str | None
    # In AUTH token mode: what the caller shows (a bearer token, HTTP Basic, or nothing).
    auth: Literal["bearer", "basic", "none"]
    body_required: bool


def documented(
    *,
    responses: dict[int, dict[str, Any]],
    problems: Iterable[int | tuple[int, str]] = (),
    tag: str = "todos",
    body: type[BaseModel] | None = None,
    query: type[BaseModel] | None = None,
    headers: Iterable[str] = (),
    description: str | None = None,
    auth: Literal["bearer", "basic", "none"] = "bearer",
    body_required: bool = True,
) -> Callable[[View], View]:
    """Declare a view's operation: body and query models, headers, answers and problems.

    `headers` name request header parameters (IfMatch, IfNoneMatch, IfUnmodifiedSince,
    IdempotencyKey); each of `problems` is a status with a shared answer (400, 404, 412, 413,
    415, 503), or a status and a description of its own.
    """
    operation = Operation(
        responses=responses,
        problems=dict(
            (problem, None) if isinstance(problem, int) else problem for problem in problems
        ),
        tag=tag,
        body=body,
        query=query,
        headers=tuple(headers),
        description=description,
        auth=auth,
        body_required=body_required,
    )

    def declare(view: View) -> View:
        view.openapi = operation  # type: ignore[attr-defined]
        return view

    return declare


def openapi_path(rule: Rule) -> str:
    """Turn a Werkzeug rule under the API prefix into an OpenAPI path template."""
    return _RULE_ARGUMENT.sub(r"{\1}", rule.rule.removeprefix(API_PREFIX))


def api_rules(app: Flask) -> list[Rule]:
    """Return the routes of the API blueprint, in the order they were declared."""
    return [
        rule
        for rule in app.url_map.iter_rules()
        if rule.endpoint.partition(".")[0] in API_BLUEPRINTS
        and rule.rule.startswith(f"{API_PREFIX}/")
    ]


def documented_methods(rule: Rule) -> list[str]:
    """Return the methods of a route that are operations of the API, in the usual order."""
    methods = set(rule.methods or ()) - IMPLICIT_METHODS
    return sorted(
        methods, key=lambda method: (_METHOD_ORDER.get(method, len(_METHOD_ORDER)), method)
    )


def operation_id(rule: Rule, method: str) -> str:
    """Name an operation after its view, and its method when the view has several."""
    name = rule.endpoint.partition(".")[2]
    return name if len(documented_methods(rule)) == 1 else f"{name}_{method.lower()}"


def _summary(view: Any) -> str:
    return (view.__doc__ or "").strip().splitlines()[0]


def _query_parameters(model: type[BaseModel]) -> list[dict[str, Any]]:
    parameters = []
    for name, schema in model.model_json_schema(ref_template=SCHEMA_REF)["properties"].items():
        schema = dict(schema)
        description = schema.pop("description", None)
        schema.pop("default", None)
        schema.pop("title", None)
        # An absent parameter is how "no filter" is said; a query string has no null.
        if "anyOf" in schema:
            branches = [branch for branch in schema.pop("anyOf") if branch != {"type": "null"}]
            schema = branches[0] | schema if len(branches) == 1 else {"anyOf": branches} | schema
        parameter = {"name": name, "in": "query", "required": False, "schema": schema}
        if description:
            parameter["description"] = description
        parameters.append(parameter)
    return parameters


def _operation(app: Flask, rule: Rule, method: str) -> dict[str, Any]:
    view = app.view_functions[rule.endpoint]
    spec: Operation | None = getattr(view, "openapi", None)
    if spec is None:
        raise LookupError(f"{method} {rule.rule} ({rule.endpoint}) is not @documented")
    operation: dict[str, Any] = {
        "operationId": operation_id(rule, method),
        "summary": _summary(view),
        "tags": [spec.tag],
    }
    # Without a description of its own, an operation is described by its whole docstring.
    operation["description"] = spec.description or getdoc(view)
    parameters = [ref(PATH_PARAMETERS[name], "parameters") for name in rule.arguments]
    parameters += [ref(header, "parameters") for header in spec.headers]
    if spec.query is not None:
        parameters += _query_parameters(spec.query)
    if parameters:
        operation["parameters"] = parameters
    if spec.body is not None:
        operation["requestBody"] = {
            "required": spec.body_required,
            "content": json_content(ref(spec.body.__name__)),
        }
    problems = {
        status: ref(_PROBLEMS[status], "responses")
        if description is None
        else _problem(status, description, description)
        for status, description in spec.problems.items()
    }
    if app.config["RATE_LIMIT"] and rule.endpoint not in EXEMPT_ENDPOINTS:
        problems.setdefault(429, ref("TooManyRequests", "responses"))
    if _token_mode(app):
        _check_security(rule.endpoint, spec.auth)
        operation["security"] = SECURITY[spec.auth]
        if spec.auth != "none":
            problems[401] = ref(_UNAUTHENTICATED[spec.auth], "responses")
    operation["responses"] = {
        str(status): response for status, response in sorted((spec.responses | problems).items())
    }
    return operation


def _token_mode(app: Flask) -> bool:
    return app.config["AUTH"] == "token"


def _check_security(endpoint: str, declared: str) -> None:
    # The document must not promise a public operation that todo.auth guards, or the reverse.
    if (declared == "bearer") == (endpoint in PUBLIC_ENDPOINTS):
        raise LookupError(
            f"{endpoint} is declared auth={declared!r}, which todo.auth disagrees with"
        )


def _check_path_arguments(rule: Rule) -> None:
    unknown = set(rule.arguments) - set(PATH_PARAMETERS)
    if unknown:
        raise LookupError(f"{rule.rule} has path arguments without a schema: {sorted(unknown)}")


def _allows_null(schema: dict[str, Any]) -> bool:
    types = schema.get("type")
    return (
        types == "null"
        or (isinstance(types, list) and "null" in types)
        or any(_allows_null(branch) for branch in schema.get("anyOf", schema.get("oneOf", [])))
    )


def _without_unsendable_defaults(schema: dict[str, Any]) -> dict[str, Any]:
    # A partial update's fields default to None only to mean "not sent"; a null default on a
    # field that rejects null would tell clients (and validators) to send what is an error.
    properties = {
        name: {key: value for key, value in prop.items() if key != "default"}
        if prop.get("default", ...) is None and not _allows_null(prop)
        else prop
        for name, prop in schema.get("properties", {}).items()
    }
    return schema | {"properties": properties} if properties else schema


def build_document(app: Flask) -> dict[str, Any]:
    """Build the OpenAPI document of the app's API routes."""
    paths: dict[str, dict[str, Any]] = {}
    for rule in api_rules(app):
        _check_path_arguments(rule)
        item = paths.setdefault(openapi_path(rule), {})
        for method in documented_methods(rule):
            item[method.lower()] = _operation(app, rule, method)
    token_mode = _token_mode(app)
    models = MODELS + ACCOUNT_MODELS if token_mode else MODELS
    _, definitions = models_json_schema(models, ref_template=SCHEMA_REF)
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "Todo API",
            "version": version("todo"),
            "summary": "Create, list, update and delete todos.",
            "contact": CONTACT,
            "license": LICENSE,
            "description": "Timestamps are UTC, written `YYYY-MM-DDTHH:MM:SS` without an offset. "
            'JavaScript reads such a value as local time (`new Date("2023-02-27T00:00:00")`): '
            'append "Z" to read it as UTC, `new Date(value + "Z")`. Every error is '
            "RFC 9457 problem details (`application/problem+json`), the health check's 503 "
            "aside: an unknown path answers 404, a method the path does not allow 405 with an "
            "`Allow` header. Responses that carry one todo have a strong ETag for conditional "
            "requests (If-None-Match, If-Match, If-Unmodified-Since).",
        },
        "servers": [{"url": API_PREFIX}],
        # AUTH none: nothing is asked of any client (token mode declares it per operation).
        "security": [],
        "tags": [
            {"name": "index", "description": "Where to start: links to the docs and the API."},
            {"name": "todos", "description": "The todo resource."},
            {"name": "health", "description": "Whether the service can do its job."},
            {
                "name": "sync",
                "description": "Incremental sync for clients that keep a copy of the list.",
            },
        ],
        "paths": paths,
        "components": {
            "schemas": {
                name: _without_unsendable_defaults(schema)
                for name, schema in definitions["$defs"].items()
            },
            "parameters": _parameters(app.config),
            "headers": dict(HEADERS),
            "responses": _responses(app.config),
        },
    }
    components = document["components"]
    if token_mode or app.config["RATE_LIMIT"]:
        components["responses"]["TooManyRequests"] = TOO_MANY_REQUESTS
    if token_mode:
        document["info"]["description"] += _TOKEN_MODE_DESCRIPTION
        document["tags"].append({"name": "accounts", "description": "Users and their tokens."})
        components["parameters"] |= ACCOUNT_PARAMETERS
        components["headers"] |= ACCOUNT_HEADERS
        components["responses"] |= ACCOUNT_RESPONSES
        components["securitySchemes"] = SECURITY_SCHEMES
    return document


def openapi_document(app: Flask) -> dict[str, Any]:
    """Return the app's OpenAPI document, built once per app."""
    if _EXTENSION_KEY not in app.extensions:
        app.extensions[_EXTENSION_KEY] = build_document(app)
    return app.extensions[_EXTENSION_KEY]
