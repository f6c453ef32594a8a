"""Fuzzing as an attacker would: header values and bodies far beyond what the document says.

Schemathesis (tests/test_fuzz.py) only sends what the document allows. Here a fixed seed
drives a bounded number of hostile requests, and each must answer without a 5xx, in problem
details when it is an error, and change nothing unless it is a success that the request
really asked for. The HTTP framing itself is fuzzed through the real server, in
tests/test_server.py.
"""

import random
import string
from typing import Any

import orjson

from tests.base import AppTestCase, across_databases

SEED = 6400
REQUESTS = 250
TODOS = "/api/v1/todos"

# Pieces that parsers of entity tags, dates and keys trip over.
_TAG_PIECES = (
    '"1-1"', '"1-2"', "*", 'W/"1-1"', '""', '"', ",", ", ", " ", ";", "x", "\t", '"1-1',
    '1-1"', '"1-1"x', '"-"', '"1-99999999999999999999"', "W/", "w/", '"\x7f"', '"é"',
)  # fmt: skip
_DATE_PIECES = (
    "Sun, 06 Nov 1994 08:49:37 GMT", "Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994",
    "Mon, 31 Dec 9999 23:59:59 GMT", "Thu, 01 Jan 1970 00:00:00 GMT", "0", "-1", "", " ",
    "Sun, 32 Nov 1994 08:49:37 GMT", "x", ",",
)  # fmt: skip
_ODD_TEXT = string.printable + "\x00\x01\x7f\x80\xff"


def _hostile_text(rng: random.Random, pieces: tuple[str, ...]) -> str:
    parts = [rng.choice(pieces) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.3:
        parts.append("".join(rng.choice(_ODD_TEXT) for _ in range(rng.randint(1, 12))))
    if rng.random() < 0.05:
        parts.append(", ".join(rng.choice(pieces) for _ in range(rng.randint(50, 400))))
    return "".join(parts)


def _header_value(text: str) -> str:
    # What can travel in an HTTP header at all: no line breaks, no NUL.
    return "".join(ch for ch in text if ch not in "\r\n\x00")


def _listed_tags(value: str) -> set[str]:
    """The entity tags a lenient reader could find in an If-Match value."""
    return {part.strip() for part in value.split(",")}


@across_databases
class TestHostileHeaders(AppTestCase):
    """Preconditions and keys of every shape; a write happens only when it was asked for."""

    slow = True

    def setUp(self) -> None:
        super().setUp()
        self.rng = random.Random(SEED)

    def test_no_header_value_causes_a_5xx_or_an_unasked_for_write(self):
        todo = self.create(title="target")
        url = f"{TODOS}/{todo['id']}"
        for _ in range(REQUESTS):
            method = self.rng.choice(("GET", "PUT", "PATCH", "DELETE", "POST"))
            headers = {
                name: _header_value(_hostile_text(self.rng, pieces))
                for name, pieces in (
                    ("If-Match", _TAG_PIECES),
                    ("If-None-Match", _TAG_PIECES),
                    ("If-Unmodified-Since", _DATE_PIECES),
                    ("Idempotency-Key", _TAG_PIECES + _DATE_PIECES),
                )
                if self.rng.random() < 0.5
            }
            before = self.client.get(url)
            current = before.headers.get("ETag")
            body = {"title": "changed"} if method in ("PUT", "PATCH", "POST") else None
            response = self.client.open(
                TODOS if method == "POST" else url, method=method, json=body, headers=headers
            )
            with self.subTest(method=method, headers=headers):
                self.assertLess(response.status_code, 500, response.get_data(as_text=True))
                if response.status_code >= 400:
                    self.assertEqual(response.mimetype, "application/problem+json")
                if method in ("PUT", "PATCH", "DELETE") and response.status_code == 200:
                    if_match = headers.get("If-Match")
                    if if_match is not None and current is not None:
                        # A write under If-Match only ever hits the version the client named.
                        allowed = _listed_tags(if_match)
                        self.assertTrue(
                            current in allowed or "*" in allowed,
                            f"{method} went through with If-Match {if_match!r} at {current}",
                        )
            if before.status_code == 404 or response.status_code == 200 and method == "DELETE":
                todo = self.create(title="target")
                url = f"{TODOS}/{todo['id']}"


def _mutated(rng: random.Random, body: bytes) -> bytes:
    """Break a valid body in one of the ways a broken or hostile client would."""
    kind = rng.randrange(8)
    if kind == 0 and body:
        position = rng.randrange(len(body))
        return body[:position] + bytes([rng.randrange(256)]) + body[position + 1 :]
    if kind == 1:
        return body[: rng.randrange(len(body) + 1)]
    if kind == 2:
        depth = rng.randint(1, 5000)
        return b"[" * depth + b"]" * depth
    if kind == 3:
        return body.replace(b'"title"', b'"title":1,"title"')
    if kind == 4:
        return rng.choice([b"NaN", b"1e999", b"-0", b"\xef\xbb\xbf{}", b'"\\ud800"', b"{}" * 3])
    if kind == 5:
        value = rng.choice([None, True, 1, 1.5, 2**63, "", "x" * 200, [], {}])
        field = rng.choice(["title", "description", "completed", "deadline_at", "id", "\x00"])
        return orjson.dumps({"title": "x", field: value}, option=orjson.OPT_NON_STR_KEYS)
    if kind == 6:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 64)))
    return body + rng.choice([b" ", b"x", b"\x00", b"}", b"\n{}"])


@across_databases
class TestHostileBodies(AppTestCase):
    """Bodies broken at random: never a 5xx, and an error never stores anything."""

    slow = True

    def test_no_body_causes_a_5xx_or_a_write_with_an_error(self):
        rng = random.Random(SEED)
        todo = self.create(title="target")
        url = f"{TODOS}/{todo['id']}"
        valid = orjson.dumps({"title": "x", "description": "y", "deadline_at": "2023-02-27"})
        for _ in range(REQUESTS):
            method = rng.choice(("POST", "PUT", "PATCH"))
            body = _mutated(rng, valid)
            content_type = rng.choice(
                ["application/json", "application/json; charset=utf-8", "text/plain", "", "*/*"]
            )
            before = self._state(url)
            response = self.client.open(
                TODOS if method == "POST" else url,
                method=method,
                data=body,
                headers={"Content-Type": content_type} if content_type else {},
            )
            with self.subTest(method=method, body=body, content_type=content_type):
                self.assertLess(response.status_code, 500, response.get_data(as_text=True))
                if response.status_code >= 400:
                    self.assertEqual(response.mimetype, "application/problem+json")
                    self.assertEqual(self._state(url), before, "an error changed something")

    def _state(self, url: str) -> tuple[Any, ...]:
        return (self.client.get(url).get_data(), self.count_todos())
