"""Every pattern the OpenAPI document states agrees with the code that reads or writes it.

Each pattern is tried on a corpus of valid and invalid strings, made by hand and at random
(fixed seed), and must accept exactly what its validator accepts: in Python, and in the
regular expressions of JavaScript (ECMA-262), which JSON Schema validators use.
"""

import json
import random
import re
import shutil
import subprocess
import unittest
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from flask import Flask
from pydantic import ValidationError
from pydantic_core import PydanticCustomError

from tests.base import IN_CI, TOKEN_MODE
from todo import accounts, create_app
from todo.errors import InvalidInput
from todo.idempotency import check_key
from todo.models.idempotency import KEY_MAX_LENGTH
from todo.openapi import openapi_document
from todo.schemas import TodoCreate, UserCreate, format_timestamp, parse_body, parse_deadline
from todo.views.http import ETAG_PATTERN, entity_tags, etag_for

RANDOM = random.Random(6400)


def _title_accepted(value: str) -> bool:
    try:
        TodoCreate.model_validate({"title": value})
    except ValidationError:
        return False
    return True


def _description_accepted(value: str) -> bool:
    try:
        TodoCreate.model_validate({"title": "x", "description": value})
    except ValidationError:
        return False
    return True


def _deadline_accepted(value: str) -> bool | None:
    # The range, once in UTC, is a rule of its own that the document states in words: near
    # its ends a value can match the pattern and be out of range, or the reverse.
    try:
        parse_deadline(value)
    except PydanticCustomError as error:
        return None if error.message().startswith("must be between") else False
    return None if value < "1000" else True


def _key_accepted(value: str) -> bool:
    try:
        check_key(value)
    except InvalidInput:
        return False
    return True


def _username_accepted(value: str) -> bool:
    try:
        parse_body(UserCreate, orjson.dumps({"username": value, "password": "long enough"}))
    except InvalidInput:
        return False
    return True


def _written_timestamp(value: str) -> bool:
    try:
        return format_timestamp(datetime.fromisoformat(value)) == value
    except ValueError:
        return False


def _our_etag(value: str) -> bool:
    match = re.fullmatch(r'"([0-9]+)-([0-9]+)"', value)
    return bool(match) and etag_for(int(match[1]), int(match[2])) == value[1:-1]


def _entity_tags_accepted(value: str) -> bool:
    with Flask(__name__).test_request_context(headers={"If-Match": value}):
        try:
            entity_tags("If-Match")
        except InvalidInput:
            return False
    return True


def _issued_tokens() -> list[str]:
    """Return tokens as the service hands them out."""
    app = create_app(
        {"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", "TESTING": True} | TOKEN_MODE
    )
    with app.app_context():
        user = accounts.create_user("pattern", "long enough")
        return [accounts.create_token(user["id"], None, None)["token"] for _ in range(20)]


def _tokens() -> list[str]:
    url_safe = "abcXYZ0189-_"
    by_hand = ["", "todo_", "todo_" + "a" * 42, "todo_" + "a" * 44, "TODO_" + "a" * 43]
    by_hand += ["todo_" + "a" * 42 + c for c in "=+/. \n\x00é"]
    return (
        _issued_tokens()
        + by_hand
        + ["todo_" + value for value in _random_strings(url_safe + "=+/ ", 2000, 45)]
        + ["todo_" + "".join(RANDOM.choice(url_safe) for _ in range(43)) for _ in range(500)]
    )


def _random_strings(alphabet: str, count: int, longest: int) -> list[str]:
    return [
        "".join(RANDOM.choice(alphabet) for _ in range(RANDOM.randint(0, longest)))
        for _ in range(count)
    ]


def _deadlines() -> list[str]:
    by_hand = [
        "2023-02-27",
        "2023-02-27T00:00:00",
        "2023-02-27t10:00:00z",
        "2023-02-27 10:00",
        "2023-02-27T10:00:00.123456+10:00",
        "2023-02-27T05:30:00+0530",
        "2024-02-29",
        "2000-02-29",
        "1900-02-29",
        "2023-02-29",
        "2023-02-30",
        "2023-04-31",
        "2023-13-01",
        "2023-00-10",
        "0000-01-01",
        "0001-01-01",
        "0400-02-29",
        "0999-12-31T23:00:00-02:00",
        "0999-12-31T23:00:00+02:00",
        "0999-12-31",
        "0500-06-01",
        "9999-12-31T23:00:00-02:00",
        "9999-12-31T23:59:59",
        "2023-02-27T24:00:00",
        "2023-02-27T23:60:00",
        "2023-02-27T23:59:60",
        "2023-02-27T10:00:00+10:60",
        "2023-02-27T10:00:00+10:99",
        "2023-02-27T10:00:00+24:00",
        "2023-02-27T10:00:00+10",
        "2023-02-27T10:00:00.",
        "20230227",
        "2023-2-27",
        "\u0662\u0660\u0662\u0663-02-27",
        "2023-02-27\n",
        "",
    ]
    templates = [
        "DDDD-DD-DD",
        "DDDD-DD-DDTDD:DD",
        "DDDD-DD-DDTDD:DD:DD.DZ",
        "DDDD-DD-DDTDD:DD+DD:DD",
    ]
    at_random = []
    for _ in range(3000):
        template = RANDOM.choice(templates)
        at_random.append("".join(RANDOM.choice("0123456789") if c == "D" else c for c in template))
    # Real days, each a valid value.
    start = datetime(1000, 1, 1, tzinfo=UTC)
    for _ in range(1000):
        at_random.append((start + timedelta(days=RANDOM.randrange(3_200_000))).date().isoformat())
    return by_hand + at_random


def _titles() -> list[str]:
    blanks = " \t\n\v\f\r\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u200a\u2028\u2029\u202f\u205f\u3000"
    by_hand = ["Watch CSSE6400 Lecture", " x ", "\u200b", "a\x00b", "\x00", "", "é", "🙂"]
    return by_hand + list(blanks) + _random_strings(blanks + "ab\x00", 2000, 6)


# The document's patterns, each with the code it states and a corpus to try it on. The code
# accepts a value (True), rejects it (False), or leaves it to a rule stated in words (None).
CHECKS: dict[str, tuple[Callable[[str], bool | None], Callable[[], list[str]]]] = {
    "title": (_title_accepted, _titles),
    "description": (_description_accepted, lambda: ["", "x", "a\x00", "\x00", " "]),
    "deadline": (_deadline_accepted, _deadlines),
    "timestamp": (
        _written_timestamp,
        lambda: [
            format_timestamp(datetime(2023, 2, 27, 1, 2, 3)),
            "2023-02-27T00:00:00Z",
            "2023-02-27 00:00:00",
            "2023-02-27T00:00:00.5",
            "2023-02-27",
        ],
    ),
    "etag": (
        _our_etag,
        lambda: [
            f'"{etag_for(1, 1)}"',
            f'"{etag_for(2**63 - 1, 2**31 - 1)}"',
            "1-1",
            'W/"1-1"',
            '"1-"',
            '"-1"',
            '"1-1-1"',
            '"01-1"',
            '"1-01"',
            '"a-1"',
            '""',
        ],
    ),
    "entity tags": (
        _entity_tags_accepted,
        lambda: (
            ['"1-1"', "*", " * ", 'W/"1-1", "x,y" ,, "" ,', '"a" "b"', '"1-1" x', '"1-1";']
            + ['"1-1', ",,,", "", '*, "1-1"', 'w/"1-1"', '"\x7f"', '"\xff"', '"\u0100"']
            + _random_strings(' ,"W/a*\t', 2000, 8)
        ),
    ),
    "idempotency key": (
        _key_accepted,
        lambda: (
            [
                "x",
                "9f1c2a7e-5b4d-4c1e-8f3a-2d6b7e9c0a1f",
                "a b",
                " a",
                "a ",
                "",
                "é",
                "a\tb",
                "~" * KEY_MAX_LENGTH,
            ]
            + _random_strings(" !~a\x7f\x1f", 2000, 5)
        ),
    ),
    "username": (
        _username_accepted,
        lambda: (
            ["alice", "A.b_c-9", "", "a b", "é", "a\n", "x" * 64, "x" * 65, "a:b"]
            + _random_strings("aZ9._- :\u0131\u212a", 2000, 66)
        ),
    ),
    "retry after": (str.isdigit, lambda: ["1", "120", "", "-1", "1.5", " 1"]),
    "token": (accounts.looks_like_token, _tokens),
}
# The bearer scheme states the token's shape in its description, the pattern in backticks.
_STATED_PATTERN = re.compile(r"`(\^[^`]+\$)`")


def _patterns(node: Any, path: str = "") -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "pattern" and isinstance(value, str):
                yield path, value
            else:
                yield from _patterns(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _patterns(value, f"{path}/{index}")


def _name(path: str) -> str:
    """Tell which rule a pattern at this place of the document states."""
    for fragment, name in (
        ("/TodoOut/properties/deadline_at", "timestamp"),
        ("/title", "title"),
        ("/username", "username"),
        ("/description", "description"),
        ("/deadline_at", "deadline"),
        ("_at", "timestamp"),
        ("ETag", "etag"),
        ("/IfMatch", "entity tags"),
        ("/IfNoneMatch", "entity tags"),
        ("IdempotencyKey", "idempotency key"),
        ("Retry-After", "retry after"),
    ):
        if fragment in path:
            return name
    raise LookupError(f"no check for the pattern at {path}")


def _ecma_matches(pattern: str, corpus: list[str]) -> list[bool] | None:
    """Match a corpus with JavaScript's regular expressions, as JSON Schema does."""
    node = shutil.which("node")
    if node is None:
        return None
    script = (
        "const {pattern, corpus} = JSON.parse(require('fs').readFileSync(0, 'utf8'));"
        "const re = new RegExp(pattern, 'u');"
        "process.stdout.write(JSON.stringify(corpus.map((s) => re.test(s))));"
    )
    result = subprocess.run(
        [node, "-e", script],
        input=json.dumps({"pattern": pattern, "corpus": corpus}),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return json.loads(result.stdout)


class TestDocumentedPatterns(unittest.TestCase):
    """The patterns of the documents of both modes: AUTH none, and token with its accounts."""

    @classmethod
    def setUpClass(cls) -> None:
        cls.patterns = {}
        for mode in ({}, TOKEN_MODE):
            config = {"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", "TESTING": True} | mode
            document = openapi_document(create_app(config))
            for path, pattern in _patterns(document):
                cls.patterns.setdefault(_name(path), set()).add(pattern)
            schemes = document["components"].get("securitySchemes", {})
            if "bearer" in schemes:
                stated = _STATED_PATTERN.findall(schemes["bearer"]["description"])
                cls.patterns.setdefault("token", set()).update(stated)

    def test_every_rule_states_one_pattern_and_has_a_check(self):
        self.assertEqual(set(self.patterns), set(CHECKS))
        for name, patterns in self.patterns.items():
            self.assertEqual(len(patterns), 1, f"{name} is stated in different ways: {patterns}")

    def test_each_pattern_accepts_exactly_what_its_code_accepts(self):
        for name, (accepted, corpus) in CHECKS.items():
            (pattern,) = self.patterns[name]
            values = corpus()
            compiled = re.compile(pattern)
            in_javascript = _ecma_matches(pattern, values)
            if in_javascript is None and IN_CI:
                self.fail("node is needed to check the patterns as JSON Schema reads them")
            for index, value in enumerate(values):
                with self.subTest(rule=name, value=value):
                    expected = accepted(value)
                    if expected is None:
                        continue
                    self.assertEqual(bool(compiled.fullmatch(value)), expected)
                    if in_javascript is not None:
                        self.assertEqual(in_javascript[index], expected, "in JavaScript")

    def test_the_etag_written_matches_the_pattern(self):
        self.assertRegex(f'"{etag_for(12, 3)}"', ETAG_PATTERN)

    def test_a_deadline_offset_with_impossible_minutes_is_rejected(self):
        for value in ("2023-02-27T10:00:00+10:60", "2023-02-27T10:00:00+0999"):
            with self.subTest(value=value), self.assertRaises(PydanticCustomError):
                parse_deadline(value)
