"""The readers of request examples (.http files, curl commands in Markdown), and the accounts
flow of endpoints.http sent in order to an app in AUTH token mode."""

import base64
import unittest
from urllib.parse import urlsplit

from tests.base import TOKEN_MODE, AppTestCase
from tests.examples import (
    Answer,
    HttpRequest,
    curl_requests,
    endpoints_http,
    parse_http_file,
    path_template,
    ready_to_send,
)
from todo.openapi import API_PREFIX, openapi_document

# The tags of the requests for a service in AUTH none, and of those for one in AUTH token.
TODOS, ACCOUNTS = "todos", "accounts"


class TestHttpFileParser(unittest.TestCase):
    def test_reads_variables_titles_headers_and_bodies(self):
        text = (
            "# intro\n\n@baseUrl = http://127.0.0.1:8000/api/v1\n\n"
            "### Create a todo\nPOST {{baseUrl}}/todos\nContent-Type: application/json\n\n"
            '{"title": "x"}\n\n'
            "###\n# Get it\nGET {{baseUrl}}/todos/1 HTTP/1.1\n"
        )
        first, second = parse_http_file(text)
        self.assertEqual(
            (first.title, first.method, first.url, first.headers),
            (
                "Create a todo",
                "POST",
                "http://127.0.0.1:8000/api/v1/todos",
                {"Content-Type": "application/json"},
            ),
        )
        self.assertEqual(first.body.strip(), '{"title": "x"}')
        self.assertEqual(
            (second.title, second.method, second.url),
            ("Get it", "GET", "http://127.0.0.1:8000/api/v1/todos/1"),
        )

    def test_reads_names_tags_expected_statuses_and_nested_variables(self):
        text = (
            "@user = alice\n@login = {{user}}:secret\n\n"
            "### Log in\n# @tag accounts flow\n# @name login\n# @expect 201\n"
            "POST http://h/tokens\nAuthorization: Basic {{login}}\n\n"
            "### Use it\n# @tag accounts\n// @expect 200\n"
            "GET http://h/todos/{{created.response.body.$.items[1].id}}\n"
            "Authorization: Bearer {{login.response.body.$.token}}\n"
        )
        login, use = parse_http_file(text)
        self.assertEqual(
            (login.title, login.name, login.tags, login.expect),
            ("Log in", "login", ("accounts", "flow"), 201),
        )
        self.assertEqual(login.headers, {"Authorization": "Basic alice:secret"})
        self.assertEqual((use.name, use.tags, use.expect), (None, ("accounts",), 200))
        self.assertEqual(use.url, "http://h/todos/{{created.response.body.$.items[1].id}}")

    def test_puts_in_earlier_answers_and_encodes_basic_credentials(self):
        request = HttpRequest(
            "t",
            "DELETE",
            "http://h/tokens/{{login.response.body.$.id}}?page={{page.response.headers.Link}}",
            {"Authorization": "Bearer {{login.response.body.$.token}}"},
            '{"first": {{list.response.body.$[0].id}}}',
        )
        answers = {
            "login": Answer({}, {"id": 7, "token": "todo_x"}),
            "page": Answer({"Link": "2"}, None),
            "list": Answer({}, [{"id": 3}]),
        }
        sent = ready_to_send(request, answers)
        self.assertEqual(sent.url, "http://h/tokens/7?page=2")
        self.assertEqual(sent.headers, {"Authorization": "Bearer todo_x"})
        self.assertEqual(sent.body, '{"first": 3}')
        basic = HttpRequest("t", "POST", "http://h", {"Authorization": "Basic alice:pass word"})
        encoded = base64.b64encode(b"alice:pass word").decode()
        self.assertEqual(ready_to_send(basic, {}).headers, {"Authorization": f"Basic {encoded}"})

    def test_reads_curl_commands_across_lines(self):
        text = (
            "```sh\ncurl -s http://127.0.0.1:8000/api/v1/todos\n"
            "curl -X PUT http://127.0.0.1:8000/api/v1/todos/1 \\\n"
            "  -H 'Content-Type: application/json' -d '{\"completed\": true}'\n"
            "curl -d '{}' -H 'Content-Type: application/json' http://127.0.0.1:8000/api/v1/todos\n```\n"
            "Then `curl -si 'localhost:8000/api/v1/todos?limit=2'  # a comment` and more.\n"
        )
        self.assertEqual(
            curl_requests(text),
            [
                ("GET", "http://127.0.0.1:8000/api/v1/todos"),
                ("PUT", "http://127.0.0.1:8000/api/v1/todos/1"),
                ("POST", "http://127.0.0.1:8000/api/v1/todos"),
                ("GET", "http://localhost:8000/api/v1/todos?limit=2"),
            ],
        )


class TestEndpointsHttpTags(unittest.TestCase):
    def test_every_request_belongs_to_exactly_one_flow(self):
        # httpyac sends a flow with --tag, so an untagged request would never be sent.
        for request in endpoints_http():
            with self.subTest(request=request.title):
                self.assertEqual(len({TODOS, ACCOUNTS} & set(request.tags)), 1)


class TestClassicFlowOfEndpointsHttp(AppTestCase):
    """The requests for AUTH none, sent in order as REST Client sends them, twice over."""

    tagged = TODOS

    def setUp(self) -> None:
        super().setUp()
        self.flow = [request for request in endpoints_http() if self.tagged in request.tags]
        self.document = openapi_document(self.app)

    def send_flow(self) -> list[tuple[HttpRequest, object]]:
        """Send every request of the flow, each with the answers before it put in."""
        answers: dict[str, Answer] = {}
        exchanges = []
        for request in self.flow:
            sent = ready_to_send(request, answers)
            parts = urlsplit(sent.url)
            response = self.client.open(
                parts.path,
                method=sent.method,
                query_string=parts.query,
                headers=sent.headers,
                data=sent.body.strip().encode(),
            )
            if request.name:
                answers[request.name] = Answer(response.headers, response.get_json(silent=True))
            exchanges.append((sent, response))
        return exchanges

    def test_the_flow_answers_as_it_says_and_as_documented(self):
        self.assertTrue(self.flow, "endpoints.http has no such requests")
        # Each request takes ids and tags from earlier answers, so a second run on the same
        # database answers as the first did.
        for run in ("first", "again"):
            for sent, response in self.send_flow():
                with self.subTest(run=run, request=sent.title):
                    self.assertIsNotNone(sent.expect, "say the status: # @expect NNN")
                    self.assertNotIn("{{", sent.url + str(sent.headers) + sent.body)
                    self.assertEqual(
                        response.status_code, sent.expect, response.get_data(as_text=True)
                    )
                    path = urlsplit(sent.url).path.removeprefix(API_PREFIX)
                    template = path_template(path, self.document["paths"])
                    operation = self.document["paths"][template].get(sent.method.lower())
                    if operation is None:
                        self.assertEqual(response.status_code, 405)
                        continue
                    self.assertIn(str(response.status_code), operation["responses"])
                    documented = operation["responses"][str(response.status_code)]
                    while "$ref" in documented:
                        name = documented["$ref"].split("/")[-1]
                        documented = self.document["components"]["responses"][name]
                    if "content" in documented:
                        self.assertIn(response.mimetype, documented["content"])
                    else:
                        self.assertEqual(response.get_data(), b"")


class TestAccountsFlowOfEndpointsHttp(TestClassicFlowOfEndpointsHttp):
    """The requests tagged `accounts`, on a service in AUTH token; the flow deletes the
    account it made, so it too runs again as it did the first time."""

    config = TOKEN_MODE
    tagged = ACCOUNTS

    def test_the_flow_covers_every_accounts_operation_and_uses_captured_values(self):
        used = {(request.method, urlsplit(request.url).path) for request in self.flow}
        for path, item in self.document["paths"].items():
            for method, operation in item.items():
                if operation["tags"] == [ACCOUNTS]:
                    with self.subTest(operation=f"{method.upper()} {path}"):
                        self.assertTrue(
                            any(
                                sent_method == method.upper()
                                and sent_path.startswith(API_PREFIX + path.split("{")[0])
                                for sent_method, sent_path in used
                            )
                        )
        # Ids and tokens come from earlier answers, never written into the file.
        for request in self.flow:
            with self.subTest(request=request.title):
                self.assertNotRegex(request.url, r"/[0-9]+(\?|$)")
                self.assertNotIn("todo_", str(request.headers))
