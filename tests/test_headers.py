"""Headers every response carries, and the docs page's Content-Security-Policy."""

import re
from html.parser import HTMLParser

from tests.base import AppTestCase


class InlineCode(HTMLParser):
    """Collect the page's inline scripts and styles, with their nonce attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.nonces: list[str | None] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "style" or (tag == "script" and "src" not in attributes):
            self.nonces.append(attributes.get("nonce"))


class TestEveryResponse(AppTestCase):
    def test_every_kind_of_answer_says_nosniff(self):
        todo = self.create()
        for method, path, body in (
            ("GET", "/api/v1/health", None),
            ("GET", "/api/v1/todos", None),
            ("GET", f"/api/v1/todos/{todo['id']}", None),
            ("POST", "/api/v1/todos", {"title": "x"}),
            ("POST", "/api/v1/todos", {"title": ""}),
            ("GET", "/api/v1/todos/999", None),
            ("DELETE", "/api/v1/todos", None),
            ("GET", "/nowhere", None),
            ("GET", "/api/v1/openapi.json", None),
            ("GET", "/api/v1/docs", None),
            ("GET", "/api/v1/docs/swagger-ui.css", None),
        ):
            with self.subTest(method=method, path=path):
                response = self.client.open(path, method=method, json=body)
                # A file is streamed from disk until the response is closed.
                self.addCleanup(response.close)
                self.assertEqual(response.headers["X-Content-Type-Options"], "nosniff")

    def test_a_response_without_a_body_says_nosniff_too(self):
        todo = self.client.post("/api/v1/todos", json={"title": "x"})
        response = self.client.get(
            todo.headers["Location"], headers={"If-None-Match": todo.headers["ETag"]}
        )
        self.assertEqual(response.status_code, 304)
        self.assertEqual(response.headers["X-Content-Type-Options"], "nosniff")


class TestDocsPagePolicy(AppTestCase):
    def policy(self, response) -> dict[str, str]:
        directives = response.headers["Content-Security-Policy"].split(";")
        return dict(directive.strip().partition(" ")[::2] for directive in directives)

    def test_the_page_runs_only_its_own_files_and_its_nonced_inline_code(self):
        response = self.client.get("/api/v1/docs")
        policy = self.policy(response)
        nonce = re.fullmatch(r"'self' 'nonce-([A-Za-z0-9_-]{22,})'", policy["script-src"])[1]
        self.assertEqual(policy["style-src"], f"'self' 'nonce-{nonce}'")
        self.assertEqual(policy["default-src"], "'none'")
        self.assertEqual(policy["connect-src"], "'self'")
        page = InlineCode()
        page.feed(response.get_data(as_text=True))
        self.assertEqual(len(page.nonces), 2, "one inline script and one style")
        self.assertEqual(page.nonces, [nonce, nonce])

    def test_each_page_gets_a_new_nonce(self):
        first, second = (self.policy(self.client.get("/api/v1/docs")) for _ in range(2))
        self.assertNotEqual(first["script-src"], second["script-src"])

    def test_the_page_cannot_be_framed(self):
        response = self.client.get("/api/v1/docs")
        self.assertEqual(self.policy(response)["frame-ancestors"], "'none'")
        self.assertEqual(response.headers["X-Frame-Options"], "DENY")
