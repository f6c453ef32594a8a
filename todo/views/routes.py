"""The /api/v1 blueprint: thin views that validate, call the store and shape the answer.

Each view declares its OpenAPI operation beside it (todo.openapi.documented).
"""

from flask import Blueprint, Response, request, url_for
from werkzeug.routing import BaseConverter

from todo import database, idempotency, lists, store, sync
from todo.auth import current_owner
from todo.openapi import HEADERS, documented, json_answer, ref, removed_answer, todo_answer
from todo.schemas import (
    ChangesQuery,
    TodoCreate,
    TodoListQuery,
    TodoUpdate,
    changes_json,
    parse_body,
    parse_query,
    todo_json,
    todos_json,
    todos_json_stream,
)
from todo.views.http import (
    entity_tags,
    etag_for,
    header,
    json_body,
    json_response,
    not_modified,
    preconditions,
)

api = Blueprint("api", __name__)
# The conditional request headers a write honours (todo.views.http.preconditions).
PRECONDITIONS = ("IfMatch", "IfNoneMatch", "IfUnmodifiedSince")


class TodoIdConverter(BaseConverter):
    """Read any path segment as a todo id; one that is not a number becomes -1 (no todo)."""

    def to_python(self, value: str) -> int:
        return int(value) if value.isascii() and value.isdigit() and len(value) <= 20 else -1

    def to_url(self, value: int) -> str:
        return str(value)


def _todo_response(todo, status: int = 200) -> Response:
    return json_response(todo_json(todo), status, etag_for(todo.id, todo.version))


@api.get("/health")
@documented(
    tag="health",
    auth="none",
    description='The one error that is not problem details: a 503 carries exactly `{"status": '
    '"unavailable"}`.',
    responses={
        200: json_answer('The database answers: `{"status": "ok"}`.', ref("Health")),
        503: json_answer(
            'The database does not answer: `{"status": "unavailable"}`.', ref("Health")
        ),
    },
)
def health():
    """Check that the service and its database answer."""
    if database.ready():
        return {"status": "ok"}
    return {"status": "unavailable"}, 503


@api.get("/todos")
@documented(
    query=TodoListQuery,
    description="Filters combine with AND. Without `limit` every matching todo is returned. "
    "Any other query parameter, or one given twice, is a 400 that names it.",
    responses={
        200: json_answer(
            "The matching todos, ordered by id.", {"type": "array", "items": ref("TodoOut")}
        )
        | {"headers": {"Link": ref("Link", "headers")}},
    },
    problems=(400, 503),
)
def list_todos():
    """List todos ordered by id, filtered by state and deadline, paged by id."""
    query = parse_query(TodoListQuery, dict(request.args.lists()))
    if query.limit is None:
        return Response(
            todos_json_stream(lists.stream(query, current_owner())), mimetype="application/json"
        )
    todos, after = lists.page(query, current_owner())
    response = json_response(todos_json(todos))
    if after is not None:
        following = url_for(".list_todos", **(request.args.to_dict() | {"after": after}))
        response.headers["Link"] = f'<{following}>; rel="next"'
    return response


@api.get("/todos/<todo_id:todo_id>")
@documented(
    headers=("IfNoneMatch",),
    responses={
        200: todo_answer("The todo."),
        304: {
            "description": "The todo still has the ETag sent in If-None-Match.",
            "headers": {"ETag": ref("ETag", "headers")},
        },
    },
    problems=(400, 404, 503),
)
def get_todo(todo_id: int):
    """Get one todo; If-None-Match with its current ETag answers 304."""
    cached = entity_tags("If-None-Match")
    todo = store.get(todo_id, current_owner())
    return not_modified(cached, todo) or _todo_response(todo)


@api.post("/todos")
@documented(
    body=TodoCreate,
    headers=("IdempotencyKey",),
    description="Only `title`, `description`, `completed` and `deadline_at` may be sent; any "
    "other field is a 400 that names it.",
    responses={
        201: todo_answer(
            "The todo, as stored; a replayed Idempotency-Key answers the first response again.",
            headers={
                "Location": ref("Location", "headers"),
                "Idempotent-Replayed": ref("Idempotent-Replayed", "headers"),
            },
            links=True,
        ),
    },
    problems=(
        400,
        411,
        413,
        415,
        (422, "The Idempotency-Key was already used with a different body."),
        503,
        501,
        (507, "No more todos can be stored: the database has run out of ids or space."),
    ),
)
def create_todo():
    """Create a todo; an Idempotency-Key makes retries safe."""
    payload = parse_body(TodoCreate, json_body())
    key = header(idempotency.HEADER)
    if key is None:
        todo = store.create(payload.model_dump(), current_owner())
        created = idempotency.Created(todo_json(todo), todo.id)
    else:
        created = idempotency.create_once(idempotency.check_key(key), payload, current_owner())
    response = json_response(created.body, 201, etag_for(created.todo_id, 1))
    # The new todo's URL is this request's, the collection's, and its id: what url_for would
    # build, for a twentieth of the request's time less (bench/README.md, issue 13).
    response.headers["Location"] = f"{request.script_root}{request.path}/{created.todo_id}"
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@api.route("/todos/<todo_id:todo_id>", methods=["PUT", "PATCH"])
@documented(
    body=TodoUpdate,
    headers=PRECONDITIONS,
    description="A partial update, as PATCH: only the fields sent change; nothing is "
    "required. `null` clears `description` and `deadline_at`.",
    responses={200: todo_answer("The updated todo.")},
    problems=(400, 404, 411, 412, 413, 415, 501, 503),
)
def update_todo(todo_id: int):
    """Change the fields sent, leaving the others; If-Match guards against lost updates."""
    changes = parse_body(TodoUpdate, json_body()).changes()
    todo = store.update(todo_id, current_owner(), changes, preconditions(todo_id))
    return _todo_response(todo)


@api.delete("/todos/<todo_id:todo_id>")
@documented(
    headers=PRECONDITIONS,
    description="Deleting is idempotent: when there is no such todo, whatever the id, the "
    "answer is 200 with `{}`.",
    responses={
        200: removed_answer(
            "The deleted todo, or `{}` when there was none.", "TodoOut", "No todo had this id."
        )
        | {"headers": {"ETag": HEADERS["ETag"] | {"required": False}}},
    },
    problems=(400, 412, 503),
)
def delete_todo(todo_id: int):
    """Delete a todo and answer with it; a missing one answers {} (deleting is idempotent)."""
    todo = store.delete(todo_id, current_owner(), preconditions(todo_id))
    if todo is None:
        return {}
    return _todo_response(todo)


@api.get("/changes")
@documented(
    tag="sync",
    query=ChangesQuery,
    description="Start without `since`: every todo comes as an `upsert`, over as many calls as "
    "`more` says. Then send the last `cursor` received as `since`: each todo that changed comes "
    "once, in its latest state, and each deleted one as a `delete`. A client that applies every "
    "answer in order holds exactly what GET /todos returns once the writes stop, never missing "
    "a change made while it called. Deletions are remembered for TOMBSTONE_DAYS (30 by "
    "default); an older cursor, or one this server did not issue for this list, is a 410: start "
    "again without `since`. Any other query parameter is a 400 that names it.",
    responses={200: json_answer("The changes after the cursor.", ref("ChangesOut"))},
    problems=(
        (400, "A parameter is invalid, or the cursor cannot be read."),
        (
            410,
            "The cursor is older than the deletions still remembered, was not issued for this "
            "list, or an import, seed, adoption or change of AUTH mode made it stale: start "
            "again without since.",
        ),
        503,
    ),
)
def list_changes():
    """Sync: what changed since a cursor (every todo, to start)."""
    query = parse_query(ChangesQuery, dict(request.args.lists()))
    found = sync.changes(current_owner(), query.since, query.limit)
    return json_response(changes_json(found.changes, found.cursor, found.more))
