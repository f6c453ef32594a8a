"""The benchmark's Flask floor: the ceiling's own raw sqlite3 work, behind Flask.

The same routes answer with exactly what bench/ceiling.py does, but through Flask's routing,
request and response objects. What it loses against the ceiling is what Flask itself costs
on this server, before any validation or ORM: the least any Flask app, the service
included, pays per request. Serve it with `gunicorn bench.flask_floor:app` and the SQLite
file named by the environment variable BENCH_DB.
"""

from flask import Flask, Response, request

from bench import ceiling

app = Flask(__name__)


def answer(route, *arguments) -> Response:
    """Turn one of the ceiling's answers into a Flask response with the same bytes."""
    try:
        status, payload, headers = route(*arguments)
        mimetype = "application/json"
    except ceiling.HTTPError as error:
        status, payload, headers = ceiling.problem(error.status)
        mimetype = "application/problem+json"
    except (ValueError, KeyError, TypeError, ceiling.sqlite3.IntegrityError):
        status, payload, headers = ceiling.problem(400)
        mimetype = "application/problem+json"
    body = ceiling.json.dumps(payload, separators=(",", ":"))
    return Response(body, int(status[:3]), headers, mimetype=mimetype)


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
