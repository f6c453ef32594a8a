"""Errors outside validation: unknown paths, wrong methods, crashes and a missing database."""

import os
import socket
import tempfile

from tests.base import AppTestCase

TODOS = "/api/v1/todos"
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
# What each route allows; every other method answers 405.
ROUTES = {
    "/": {"GET", "HEAD", "OPTIONS"},
    "/api/v1": {"GET", "HEAD", "OPTIONS"},
    "/api/v1/": {"GET", "HEAD", "OPTIONS"},
    "/api/v1/health": {"GET", "HEAD", "OPTIONS"},
    TODOS: {"GET", "HEAD", "POST", "OPTIONS"},
    f"{TODOS}/1": {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"},
    f"{TODOS}/0": {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"},
    f"{TODOS}/abc": {"GET", "HEAD", "PUT", "PATCH", "DELETE", "OPTIONS"},
}
# Words that would show a client the server's internals.
INTERNALS = ("Traceback", "RuntimeError", 'File "', "sqlalchemy", "psycopg", "pymysql", "sqlite")


class ErrorTestCase(AppTestCase):
    def assertNoInternals(self, response) -> None:  # noqa: N802
        """Assert that a response shows neither HTML nor anything of the server's internals."""
        text = response.get_data(as_text=True)
        self.assertNotIn("<", text)
        for word in INTERNALS:
            self.assertNotIn(word.lower(), text.lower())


# Routing answers before any query, so these run on SQLite only.
class TestUnknownPaths(ErrorTestCase):
    # The index answers at /, /api/v1 and /api/v1/ (tests/test_index.py); nothing else near.
    PATHS = (
        "/api",
        "/api/",
        "/api/v1//",
        "/api/v2/todos",
        "/API/V1/TODOS",
        "/api/v1/todo",
        "/api/v1/todos/",
        "/api/v1/todos/1/",
        "/api/v1/todos/1/extra",
        "/api/v1/health/",
        "/api/v1//todos",
        "//api/v1/todos",
        "/api/v1/todos//1",
        "/favicon.ico",
        "/index.html",
        "/%00",
        "/api/v1/%E2%9C%93",
        "/" + "a" * 5000,
    )

    def test_unknown_paths_answer_404_problem_for_every_method(self):
        for path in self.PATHS:
            for method in METHODS:
                with self.subTest(path=path[:40], method=method):
                    response = self.client.open(path, method=method, json={"title": "x"})
                    self.assertEqual(response.status_code, 404)
                    self.assertEqual(response.mimetype, "application/problem+json")
                    if method != "HEAD":
                        self.assertProblem(response, 404)
                        self.assertNoInternals(response)
        self.assertEqual(self.count_todos(), 0)

    def test_no_static_files_are_served(self):
        for path in ("/static/app.js", "/static/", "/static/../todo/__init__.py"):
            for method in ("GET", "POST", "OPTIONS"):
                with self.subTest(path=path, method=method):
                    response = self.client.open(path, method=method)
                    self.assertProblem(response, 404)
                self.assertNoInternals(response)


class TestMethodNotAllowed(ErrorTestCase):
    def test_each_route_answers_405_with_allow_header(self):
        for path, allowed in ROUTES.items():
            for method in sorted(set(METHODS) - allowed | {"TRACE", "CONNECT", "BREW"}):
                with self.subTest(path=path, method=method):
                    response = self.client.open(path, method=method, json={"title": "x"})
                    self.assertProblem(response, 405)
                    self.assertNoInternals(response)
                    allow = {name.strip() for name in response.headers["Allow"].split(",")}
                    self.assertEqual(allow, allowed)

    def test_method_not_allowed_changes_nothing(self):
        created = self.create()
        self.assertProblem(self.client.delete(TODOS), 405)
        self.assertProblem(self.client.put(TODOS, json={"title": "x"}), 405)
        self.assertProblem(self.client.post(f"{TODOS}/1", json={"title": "x"}), 405)
        self.assertEqual(self.client.get(TODOS).get_json(), [created])


class TestInternalError(ErrorTestCase):
    """An unexpected exception answers 500 problem details, logged but never shown."""

    def make_app(self, **overrides):
        app = super().make_app(TESTING=False, PROPAGATE_EXCEPTIONS=False, **overrides)

        @app.get("/api/v1/crash")
        def crash():
            raise RuntimeError("secret internals: password=hunter2")

        return app

    def test_unexpected_exception_answers_500_problem_without_internals(self):
        with self.assertLogs(self.app.logger, "ERROR") as logs:
            response = self.client.get("/api/v1/crash")
        self.assertProblem(response, 500)
        self.assertNoInternals(response)
        self.assertNotIn("hunter2", response.get_data(as_text=True))
        # The operator, unlike the client, gets the whole story.
        self.assertIn("hunter2", "\n".join(logs.output))

    def test_the_rest_of_the_api_keeps_working_after_a_crash(self):
        with self.assertLogs(self.app.logger, "ERROR"):
            self.client.get("/api/v1/crash")
        self.create(title="after the crash")
        self.assertEqual(self.count_todos(), 1)


def closed_loopback_port() -> int:
    """Return a loopback port that nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DatabaseUnavailableTests:
    """The answers of every endpoint while the database cannot be reached."""

    def unreachable_url(self) -> str:
        raise NotImplementedError

    def make_app(self, **overrides):
        return super().make_app(
            SQLALCHEMY_DATABASE_URI=self.unreachable_url(), SCHEMA_AUTO_UPGRADE=False, **overrides
        )

    def test_every_endpoint_answers_503_problem_without_internals(self):
        for method, path, body in (
            ("GET", TODOS, None),
            ("GET", f"{TODOS}?limit=2", None),
            ("GET", f"{TODOS}/1", None),
            ("POST", TODOS, {"title": "x"}),
            ("PUT", f"{TODOS}/1", {"title": "x"}),
            ("PATCH", f"{TODOS}/1", {"completed": True}),
            ("DELETE", f"{TODOS}/1", None),
        ):
            with self.subTest(method=method, path=path):
                with self.assertLogs(self.app.logger, "WARNING"):
                    response = self.client.open(path, method=method, json=body)
                self.assertProblem(response, 503)
                self.assertNoInternals(response)
                self.assertTrue(response.headers["Retry-After"].isdigit())

    def test_bad_input_is_still_answered_400_without_the_database(self):
        response = self.client.post(TODOS, json={"title": ""})
        self.assertProblem(response, 400, "title")

    def test_health_answers_503_unavailable(self):
        response = self.client.get("/api/v1/health")
        self.assertEqual(response.status_code, 503)
        self.assertEqual(response.get_json(), {"status": "unavailable"})


class TestPostgresUnavailable(DatabaseUnavailableTests, ErrorTestCase):
    def unreachable_url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{closed_loopback_port()}/test"


class TestMySQLUnavailable(DatabaseUnavailableTests, ErrorTestCase):
    def unreachable_url(self) -> str:
        return f"mysql+pymysql://root@127.0.0.1:{closed_loopback_port()}/test"


class TestSQLiteUnavailable(DatabaseUnavailableTests, ErrorTestCase):
    def setUp(self) -> None:
        directory = tempfile.TemporaryDirectory()
        self.addCleanup(directory.cleanup)
        self.missing_directory = os.path.join(directory.name, "missing")
        super().setUp()

    def unreachable_url(self) -> str:
        return "sqlite:///" + os.path.join(self.missing_directory, "db.sqlite")
