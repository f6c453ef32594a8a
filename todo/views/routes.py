"""The /api/v1 blueprint: thin views that validate, call the store and shape the answer."""

from flask import Blueprint, Response, request, url_for
from werkzeug.routing import BaseConverter

from todo import idempotency, store
from todo.database import database_answers
from todo.schemas import (
    TodoCreate,
    TodoUpdate,
    parse_body,
    parse_query,
    todo_json,
    todos_json,
    todos_json_stream,
)
from todo.views.http import etag_for, json_body, json_response, not_modified, requested_versions

api = Blueprint("api", __name__)


class TodoIdConverter(BaseConverter):
    """Read any path segment as a todo id; one that is not a number becomes -1 (no todo)."""

    def to_python(self, value: str) -> int:
        return int(value) if value.isascii() and value.isdigit() and len(value) <= 20 else -1

    def to_url(self, value: int) -> str:
        return str(value)


@api.record_once
def _register_converter(state) -> None:
    state.app.url_map.converters["todo_id"] = TodoIdConverter
    # A doubled slash is an unknown path (a 404 problem), not an HTML redirect to the real one.
    state.app.url_map.merge_slashes = False


def _todo_response(todo, status: int = 200) -> Response:
    return json_response(todo_json(todo), status, etag_for(todo.id, todo.version))


@api.get("/health")
def health():
    """Check that the service and its database answer."""
    if database_answers():
        return {"status": "ok"}
    return {"status": "unavailable"}, 503


@api.get("/todos")
def list_todos():
    """List todos ordered by id, filtered by state and deadline, paged by id."""
    query = parse_query(dict(request.args.lists()))
    if query.limit is None:
        return Response(todos_json_stream(store.stream(query)), mimetype="application/json")
    todos, after = store.page(query)
    response = json_response(todos_json(todos))
    if after is not None:
        following = url_for(".list_todos", **(request.args.to_dict() | {"after": after}))
        response.headers["Link"] = f'<{following}>; rel="next"'
    return response


@api.get("/todos/<todo_id:todo_id>")
def get_todo(todo_id: int):
    """Get one todo; If-None-Match with its current ETag answers 304."""
    todo = store.get(todo_id)
    return not_modified(etag_for(todo.id, todo.version)) or _todo_response(todo)


@api.post("/todos")
def create_todo():
    """Create a todo; an Idempotency-Key makes retries safe."""
    payload = parse_body(TodoCreate, json_body())
    key = request.headers.get(idempotency.HEADER)
    if key is None:
        todo = store.create(payload.model_dump())
        created = idempotency.Created(todo_json(todo), todo.id)
    else:
        created = idempotency.create_once(idempotency.check_key(key), payload)
    response = json_response(created.body, 201, etag_for(created.todo_id, 1))
    response.headers["Location"] = url_for(".get_todo", todo_id=created.todo_id)
    if created.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return response


@api.route("/todos/<todo_id:todo_id>", methods=["PUT", "PATCH"])
def update_todo(todo_id: int):
    """Change the fields sent, leaving the others; If-Match guards against lost updates."""
    changes = parse_body(TodoUpdate, json_body()).changes()
    return _todo_response(store.update(todo_id, changes, requested_versions(todo_id)))


@api.delete("/todos/<todo_id:todo_id>")
def delete_todo(todo_id: int):
    """Delete a todo and answer with it; a missing one answers {} (deleting is idempotent)."""
    todo = store.delete(todo_id, requested_versions(todo_id))
    if todo is None:
        return {}
    return _todo_response(todo)
