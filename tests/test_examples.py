"""The readers of request examples: .http files and curl commands in Markdown."""

import unittest

from tests.examples import curl_requests, parse_http_file


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
