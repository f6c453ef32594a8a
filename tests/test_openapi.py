"""The OpenAPI document: valid, complete, built from the real schemas, agreeing with examples."""

import importlib.util
import re
import unittest
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from werkzeug.exceptions import MethodNotAllowed, NotFound

from tests.base import IN_CI, TOKEN_MODE, AppTestCase, basic, bearer, sign_up
from tests.examples import curl_requests, endpoints_http, path_template
from todo import create_app
from todo.auth import PUBLIC_ENDPOINTS
from todo.openapi import ACCOUNT_MODELS, API_PREFIX, SCHEMA_REF, openapi_document
from todo.schemas import TodoCreate, TodoListQuery, TodoOut, TodoUpdate

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
# Markdown whose curl commands must use only documented operations; README must have some.
MARKDOWN_WITH_EXAMPLES = (README, ROOT / "docs", ROOT / "bench" / "README.md")
METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
# The requests of endpoints.http that need a service in AUTH token mode carry this tag.
ACCOUNTS = "accounts"
TODO_OPERATIONS = {
    ("/", "GET"),
    ("/health", "GET"),
    ("/todos", "GET"),
    ("/todos", "POST"),
    ("/todos/{todo_id}", "GET"),
    ("/todos/{todo_id}", "PUT"),
    ("/todos/{todo_id}", "PATCH"),
    ("/todos/{todo_id}", "DELETE"),
    ("/changes", "GET"),
}
ACCOUNT_OPERATIONS = {
    ("/users", "POST"),
    ("/users/me", "GET"),
    ("/users/me", "DELETE"),
    ("/tokens", "POST"),
    ("/tokens", "GET"),
    ("/tokens/{token_id}", "DELETE"),
}


def _app(**config):
    return create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", "TESTING": True} | config)


def routed_operations(app) -> set[tuple[str, str]]:
    """Return (path, method) of every API route the app answers, as the document writes it."""
    routed = set()
    for rule in app.url_map.iter_rules():
        # The document describes the API, not the page and file that serve the document.
        if not rule.rule.startswith(API_PREFIX + "/") or rule.endpoint.startswith("docs."):
            continue
        path = re.sub(r"<(?:[^<>:]+:)?([^<>]+)>", r"{\1}", rule.rule[len(API_PREFIX) :])
        routed |= {(path, method) for method in rule.methods - {"HEAD", "OPTIONS"}}
    return routed


class TestDocument(AppTestCase):
    """The document of an app in the default mode (AUTH none)."""

    OPERATIONS = TODO_OPERATIONS

    def setUp(self) -> None:
        super().setUp()
        self.document = openapi_document(self.app)

    def operations(self):
        for path, item in self.document["paths"].items():
            for method, operation in item.items():
                yield path, method.upper(), operation

    def resolve(self, node: dict) -> dict:
        while "$ref" in node:
            *_, kind, name = node["$ref"].split("/")
            node = self.document["components"][kind][name]
        return node

    def test_is_served_as_json_and_is_openapi_3_1(self):
        response = self.client.get("/api/v1/openapi.json")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.mimetype, "application/json")
        self.assertEqual(response.get_json(), self.document)
        self.assertEqual(self.document["openapi"], "3.1.0")
        self.assertEqual(self.document["servers"], [{"url": API_PREFIX}])

    def test_validates_with_openapi_spec_validator(self):
        if importlib.util.find_spec("openapi_spec_validator") is None:
            if IN_CI:
                self.fail("openapi-spec-validator is not installed")
            self.skipTest("openapi-spec-validator is not installed")
        from openapi_spec_validator import OpenAPIV31SpecValidator, validate

        validate(self.client.get("/api/v1/openapi.json").get_json(), cls=OpenAPIV31SpecValidator)

    def endpoint(self, path: str, method: str) -> str:
        """Return the endpoint of the view that answers an operation."""
        view, _ = self.app.url_map.bind("localhost").match(
            API_PREFIX + path.replace("{todo_id}", "1").replace("{token_id}", "1"), method
        )
        return view

    def test_every_api_route_is_documented_and_nothing_else(self):
        documented = {(path, method) for path, method, _ in self.operations()}
        self.assertEqual(documented, routed_operations(self.app))
        self.assertEqual(documented, self.OPERATIONS)

    def test_summaries_are_the_views_docstrings(self):
        for path, method, operation in self.operations():
            with self.subTest(path=path, method=method):
                endpoint = self.endpoint(path, method)
                self.assertEqual(
                    endpoint.partition(".")[2],
                    operation["operationId"].removesuffix(f"_{method.lower()}"),
                )
                docstring = self.app.view_functions[endpoint].__doc__.strip().splitlines()[0]
                self.assertEqual(operation["summary"], docstring)

    def test_operation_ids_are_unique(self):
        ids = [operation["operationId"] for _, _, operation in self.operations()]
        self.assertEqual(len(ids), len(set(ids)))

    def test_component_schemas_are_the_models_own(self):
        schemas = self.document["components"]["schemas"]
        self.assertEqual(
            schemas["TodoCreate"], TodoCreate.model_json_schema(ref_template=SCHEMA_REF)
        )
        self.assertEqual(
            schemas["TodoOut"],
            TodoOut.model_json_schema(ref_template=SCHEMA_REF, mode="serialization"),
        )
        # A partial update's "not sent" default of None is dropped where null is not allowed.
        update = TodoUpdate.model_json_schema(ref_template=SCHEMA_REF)
        for name in ("title", "completed"):
            del update["properties"][name]["default"]
        self.assertEqual(schemas["TodoUpdate"], update)

    def test_bodies_refer_to_the_models(self):
        paths = self.document["paths"]
        body = "#/components/schemas/"

        def request_schema(operation):
            return operation["requestBody"]["content"]["application/json"]["schema"]

        def response_schema(operation, status):
            response = self.resolve(operation["responses"][status])
            return response["content"]["application/json"]["schema"]

        todos, todo = paths["/todos"], paths["/todos/{todo_id}"]
        self.assertEqual(request_schema(todos["post"]), {"$ref": body + "TodoCreate"})
        self.assertEqual(request_schema(todo["put"]), {"$ref": body + "TodoUpdate"})
        self.assertEqual(request_schema(todo["patch"]), {"$ref": body + "TodoUpdate"})
        self.assertEqual(response_schema(todos["post"], "201"), {"$ref": body + "TodoOut"})
        self.assertEqual(response_schema(todo["get"], "200"), {"$ref": body + "TodoOut"})
        self.assertEqual(
            response_schema(todos["get"], "200"),
            {"type": "array", "items": {"$ref": body + "TodoOut"}},
        )
        self.assertIn({"$ref": body + "TodoOut"}, response_schema(todo["delete"], "200")["oneOf"])

    def test_list_parameters_come_from_the_query_model_with_their_bounds(self):
        parameters = {
            parameter["name"]: parameter
            for parameter in self.document["paths"]["/todos"]["get"]["parameters"]
        }
        self.assertEqual(set(parameters), set(TodoListQuery.model_fields))
        self.assertEqual(parameters["completed"]["schema"], {"type": "boolean"})
        self.assertEqual(
            parameters["window"]["schema"], {"type": "integer", "minimum": 0, "maximum": 36500}
        )
        self.assertEqual(
            parameters["limit"]["schema"], {"type": "integer", "minimum": 1, "maximum": 1000}
        )
        self.assertEqual(parameters["after"]["schema"], {"type": "integer"})
        self.assertTrue(all(parameter["in"] == "query" for parameter in parameters.values()))

    def test_todo_id_is_an_integer_from_one(self):
        for path, method, operation in self.operations():
            if path != "/todos/{todo_id}":
                continue
            with self.subTest(method=method):
                parameters = [self.resolve(parameter) for parameter in operation["parameters"]]
                (todo_id,) = [parameter for parameter in parameters if parameter["in"] == "path"]
                self.assertEqual(todo_id["name"], "todo_id")
                self.assertEqual(todo_id["schema"]["type"], "integer")
                self.assertEqual(todo_id["schema"]["minimum"], 1)

    def test_every_error_answer_is_problem_details(self):
        problem = {"$ref": "#/components/schemas/Problem"}
        for path, method, operation in self.operations():
            for status, response in operation["responses"].items():
                if path == "/health" or int(status) < 400:
                    continue
                with self.subTest(path=path, method=method, status=status):
                    content = self.resolve(response)["content"]
                    self.assertEqual(set(content), {"application/problem+json"})
                    self.assertEqual(content["application/problem+json"]["schema"], problem)
                    # Each example shows its own status, as a client would receive it.
                    example = content["application/problem+json"]["example"]
                    self.assertEqual(example["status"], int(status))
                    self.assertEqual(example["title"], HTTPStatus(int(status)).phrase)
            # The health check and the index read no database: no 503 problem.
            if path not in ("/health", "/"):
                with self.subTest(path=path, method=method):
                    unavailable = self.resolve(operation["responses"]["503"])
                    self.assertIn("Retry-After", unavailable["headers"])
        errors = self.document["components"]["schemas"]["Problem"]["properties"]["errors"]
        field_problem = self.resolve(errors["items"])
        self.assertEqual(set(field_problem["required"]), {"field", "message"})

    def test_headers_of_the_contract_are_documented(self):
        paths = self.document["paths"]
        created = paths["/todos"]["post"]["responses"]["201"]
        self.assertEqual(set(created["headers"]), {"ETag", "Location", "Idempotent-Replayed"})
        self.assertIn("Link", paths["/todos"]["get"]["responses"]["200"]["headers"])
        self.assertIn("ETag", paths["/todos/{todo_id}"]["get"]["responses"]["304"]["headers"])
        header_parameters = {
            (method, self.resolve(parameter)["name"])
            for path, method, operation in self.operations()
            for parameter in operation.get("parameters", [])
            if self.resolve(parameter)["in"] == "header"
        }
        self.assertEqual(
            header_parameters,
            {
                ("POST", "Idempotency-Key"),
                ("GET", "If-None-Match"),
                *(
                    (method, header)
                    for method in ("PUT", "PATCH", "DELETE")
                    for header in ("If-Match", "If-None-Match", "If-Unmodified-Since")
                ),
            },
        )
        self.assertIn("412", paths["/todos/{todo_id}"]["delete"]["responses"])
        self.assertIn("422", paths["/todos"]["post"]["responses"])

    def credentials(self) -> dict[str, str]:
        """Return the headers that let a request create a todo."""
        return {}

    def test_documented_etag_matches_the_one_served(self):
        created = self.client.post(
            "/api/v1/todos", json={"title": "Tagged"}, headers=self.credentials()
        )
        tag = self.resolve(self.document["components"]["headers"]["ETag"])["schema"]["pattern"]
        self.assertRegex(created.headers["ETag"], tag)

    def test_document_is_built_once_per_app(self):
        self.assertIs(openapi_document(self.app), self.document)
        self.assertIsNot(openapi_document(_app(**self.config)), self.document)
        self.assertEqual(openapi_document(_app(**self.config)), self.document)

    def test_a_general_rate_limit_is_documented_on_every_counted_operation(self):
        document = openapi_document(self.make_app(RATE_LIMIT="100 per minute"))
        for path, item in document["paths"].items():
            for method, operation in item.items():
                with self.subTest(path=path, method=method):
                    # The health check must answer whatever clients do: no limit counts it.
                    self.assertEqual("429" in operation["responses"], path != "/health")


class TestDefaultDocument(AppTestCase):
    """AUTH none keeps the document it always had: no accounts, no security."""

    def test_without_accounts_nothing_of_them_is_described(self):
        document = openapi_document(self.app)
        components = document["components"]
        self.assertNotIn("securitySchemes", components)
        for model, _ in ACCOUNT_MODELS:
            self.assertNotIn(model.__name__, components["schemas"])
        self.assertNotIn("TokenId", components["parameters"])
        self.assertNotIn("TooManyRequests", components["responses"])
        operations = [
            (path, method, operation)
            for path, item in document["paths"].items()
            for method, operation in item.items()
        ]
        for path, method, operation in operations:
            with self.subTest(path=path, method=method):
                self.assertNotIn("security", operation)
                self.assertNotIn("401", operation["responses"])
                self.assertNotIn("429", operation["responses"])
        self.assertNotIn("AUTH", document["info"]["description"])


class TestTokenModeDocument(TestDocument):
    """The document of an app in AUTH token mode: accounts, security schemes, 401s."""

    config = TOKEN_MODE
    OPERATIONS = TODO_OPERATIONS | ACCOUNT_OPERATIONS

    def credentials(self) -> dict[str, str]:
        return bearer(sign_up(self.client, "alice"))

    def test_security_schemes_are_bearer_and_basic(self):
        schemes = self.document["components"]["securitySchemes"]
        self.assertEqual(set(schemes), {"bearer", "basic"})
        self.assertDictContainsSubset({"type": "http", "scheme": "bearer"}, schemes["bearer"])
        self.assertIn("todo_", schemes["bearer"]["bearerFormat"])
        self.assertDictContainsSubset({"type": "http", "scheme": "basic"}, schemes["basic"])

    def test_each_operation_declares_what_it_needs(self):
        for path, method, operation in self.operations():
            with self.subTest(path=path, method=method):
                endpoint = self.endpoint(path, method)
                if endpoint == "accounts.create_token":
                    expected = [{"basic": []}]
                elif endpoint in PUBLIC_ENDPOINTS:
                    expected = []
                else:
                    expected = [{"bearer": []}]
                self.assertEqual(operation["security"], expected)
        public = {
            (path, method)
            for path, method, operation in self.operations()
            if operation["security"] == []
        }
        self.assertEqual(public, {("/", "GET"), ("/health", "GET"), ("/users", "POST")})

    def test_each_guarded_operation_answers_401_as_documented_without_credentials(self):
        anonymous = self.app.test_client()
        for path, method, operation in self.operations():
            if operation["security"] == []:
                continue
            with self.subTest(path=path, method=method):
                url = API_PREFIX + path.replace("{todo_id}", "1").replace("{token_id}", "1")
                response = anonymous.open(url, method=method)
                self.assertProblem(response, 401)
                documented = self.resolve(operation["responses"]["401"])
                self.assertIn(response.mimetype, documented["content"])
                challenge = self.resolve(documented["headers"]["WWW-Authenticate"])
                self.assertTrue(challenge["required"])
                self.assertIn(response.headers["WWW-Authenticate"], challenge["schema"]["enum"])

    def test_every_documented_challenge_is_one_the_service_sends(self):
        anonymous = self.app.test_client()
        sent = {
            anonymous.get("/api/v1/todos").headers["WWW-Authenticate"],
            anonymous.get("/api/v1/todos", headers=bearer("todo_x")).headers["WWW-Authenticate"],
            anonymous.post("/api/v1/tokens", headers=basic("alice", "wrong password")).headers[
                "WWW-Authenticate"
            ],
        }
        documented = {
            value
            for _, _, operation in self.operations()
            if "401" in operation["responses"]
            for value in self.resolve(
                self.resolve(operation["responses"]["401"])["headers"]["WWW-Authenticate"]
            )["schema"]["enum"]
        }
        self.assertEqual(documented, sent)

    def test_accounts_are_documented_with_their_models_and_answers(self):
        paths = self.document["paths"]
        schemas = self.document["components"]["schemas"]
        for model, mode in ACCOUNT_MODELS:
            with self.subTest(model=model.__name__):
                self.assertEqual(
                    schemas[model.__name__],
                    model.model_json_schema(ref_template=SCHEMA_REF, mode=mode),
                )

        def body(operation: dict) -> dict:
            return operation["requestBody"]["content"]["application/json"]["schema"]

        def answer(operation: dict, status: str) -> dict:
            return operation["responses"][status]["content"]["application/json"]["schema"]

        schema = "#/components/schemas/"
        self.assertEqual(body(paths["/users"]["post"]), {"$ref": schema + "UserCreate"})
        self.assertEqual(answer(paths["/users"]["post"], "201"), {"$ref": schema + "UserOut"})
        self.assertEqual(answer(paths["/users/me"]["get"], "200"), {"$ref": schema + "UserOut"})
        self.assertEqual(body(paths["/tokens"]["post"]), {"$ref": schema + "TokenCreate"})
        self.assertFalse(paths["/tokens"]["post"]["requestBody"]["required"])
        self.assertEqual(answer(paths["/tokens"]["post"], "201"), {"$ref": schema + "TokenCreated"})
        self.assertEqual(
            answer(paths["/tokens"]["get"], "200"),
            {"type": "array", "items": {"$ref": schema + "TokenOut"}},
        )
        self.assertIn(
            {"$ref": schema + "TokenOut"},
            answer(paths["/tokens/{token_id}"]["delete"], "200")["oneOf"],
        )
        self.assertLessEqual({"403", "409"}, set(paths["/users"]["post"]["responses"]))
        throttled = self.resolve(paths["/tokens"]["post"]["responses"]["429"])
        self.assertIn("Retry-After", throttled["headers"])

    def test_the_description_tells_both_modes(self):
        description = self.document["info"]["description"]
        for words in ("`AUTH` is `token`", "Authorization: Bearer", "HTTP Basic", "`none`"):
            self.assertIn(words, description)
        self.assertIn(
            {"name": "accounts", "description": "Users and their tokens."}, self.document["tags"]
        )


class TestDocsRoutes(AppTestCase):
    def test_docs_page_loads_swagger_ui_from_the_service(self):
        response = self.client.get("/api/v1/docs")
        self.assertEqual(response.status_code, 200)
        self.assertEqual(response.mimetype, "text/html")
        page = response.get_data(as_text=True)
        sources = re.findall(r'(?:src|href)="([^"]+)"', page)
        self.assertTrue(sources)
        for source in sources:
            with self.subTest(source=source):
                self.assertTrue(source.startswith("/api/v1/"), "an asset from elsewhere")
                with self.client.get(source) as response:
                    self.assertEqual(response.status_code, 200)
        self.assertIn('"/api/v1/openapi.json"', page)

    def test_unknown_asset_is_a_404_problem(self):
        for path in ("/api/v1/docs/nothing.js", "/api/v1/docs/../openapi.json"):
            with self.subTest(path=path):
                self.assertProblem(self.client.get(path), 404)


class TestExamplesAgreeWithTheDocument(unittest.TestCase):
    """endpoints.http and the docs' curl commands use only what the document describes."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.app = _app()
        cls.document = openapi_document(cls.app)
        # The accounts requests, and the docs' curl commands, may use AUTH token's operations.
        cls.token_app = _app(**TOKEN_MODE)
        cls.token_document = openapi_document(cls.token_app)

    def check_request(self, method: str, url: str, app=None) -> tuple[str, str]:
        """Assert a request goes to a documented path; return its (template, method)."""
        app = app or self.app
        document = openapi_document(app)
        parts = urlsplit(url)
        self.assertTrue(parts.path.startswith(API_PREFIX + "/"), url)
        path = parts.path[len(API_PREFIX) :]
        template = path_template(path, document["paths"])
        self.assertIsNotNone(template, f"{url} is not a documented path")
        if method.lower() not in document["paths"][template]:
            # Only to show the 405: a method the app really refuses on that path.
            with self.assertRaises(MethodNotAllowed, msg=f"{method} {url} is not documented"):
                app.url_map.bind("127.0.0.1:8000").match(parts.path, method)
        return template, method

    def test_every_operation_has_a_request_in_endpoints_http(self):
        requests = endpoints_http()
        self.assertTrue(requests)
        covered: dict[bool, set] = {False: set(), True: set()}
        for request in requests:
            with self.subTest(request=request.title):
                self.assertTrue(request.title, f"{request.method} {request.url} has no comment")
                self.assertTrue(request.url.startswith("http://127.0.0.1:8000/api/v1/"))
                accounts = ACCOUNTS in request.tags
                app = self.token_app if accounts else self.app
                covered[accounts].add(self.check_request(request.method, request.url, app))

        def operations(document) -> set[tuple[str, str]]:
            return {
                (path, method.upper())
                for path, item in document["paths"].items()
                for method in item
            }

        classic, with_accounts = operations(self.document), operations(self.token_document)
        self.assertEqual(classic - covered[False], set(), "operations without a request")
        self.assertEqual(
            with_accounts - classic - covered[True], set(), "accounts operations without a request"
        )

    def test_every_list_filter_has_a_request_in_endpoints_http(self):
        requests = endpoints_http()
        used = {
            name.split("=")[0]
            for request in requests
            if request.method == "GET" and urlsplit(request.url).path == API_PREFIX + "/todos"
            for name in urlsplit(request.url).query.split("&")
            if name
        }
        listed = {
            parameter["name"] for parameter in self.document["paths"]["/todos"]["get"]["parameters"]
        }
        self.assertLessEqual(listed, used)

    def test_the_curl_commands_of_the_docs_use_documented_operations(self):
        if not README.exists():
            self.skipTest("no README.md yet")
        self.assertTrue(curl_requests(README.read_text()), "no curl commands found in README.md")
        files = [
            path
            for place in MARKDOWN_WITH_EXAMPLES
            for path in (sorted(place.glob("*.md")) if place.is_dir() else [place])
            if path.exists()
        ]
        for path in files:
            for method, url in curl_requests(path.read_text()):
                with self.subTest(file=str(path.relative_to(ROOT)), command=f"{method} {url}"):
                    if "/api/v1/" in url:
                        try:
                            self.check_request(method, url, self.token_app)
                        except NotFound:
                            self.fail(f"{url} is not a route")
