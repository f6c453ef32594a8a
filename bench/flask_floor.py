"""The benchmark's Flask floor: the ceiling's own raw DB-API work, behind Flask.

The same routes answer with exactly what bench/ceiling.py does, on the same database
(DATABASE_URL), but through Flask's routing, request and response objects. What it loses
against the ceiling is what Flask itself costs on this server, before any validation or
ORM: the least any Flask app, the service included, pays per request. Serve it with
`gunicorn bench.flask_floor:app`.
"""

from flask import Flask, Response, request

from bench import ceiling

app = Flask(__name__)


def answer(handler, *arguments) -> Response:
    """Turn one of the ceiling's answers into a Flask response with the same bytes."""
    status, headers, content_type, body = ceiling.answer(handler, *arguments)
    return Response(body, int(status[:3]), headers, content_type=content_type)


@app.get("/api/v1/todos/<int:todo_id>")
def get_todo(todo_id):
    return answer(ceiling.get_todo, todo_id)


@app.put("/api/v1/todos/<int:todo_id>")
def update_todo(todo_id):
    return answer(ceiling.update_todo, request.environ, todo_id)


@app.get("/api/v1/todos")
def list_todos():
    return answer(ceiling.list_todos, request.environ)


@app.post("/api/v1/todos")
def create_todo():
    return answer(ceiling.create_todo, request.environ)


@app.get("/api/v1/health")
def health():
    return answer(ceiling.health)
