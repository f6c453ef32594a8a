"""The command sequences of the README and docs/behaviour.md, run in order with real curl
against the real server on a fresh database: each comment's claim holds.

Every comment of a sequence (the one above a group of commands, the one after a command, and
an answer shown below one) is a claim, and each has its check here; a new or changed comment
without one fails, so the docs cannot say what nobody checked.
"""

import json
import os
import pty
import re
import select
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
import unittest
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tests.base import PASSWORD, skip_or_fail_in_ci
from tests.examples import ROOT, ShellStep, shell_blocks
from tests.server import Server

TIMEOUT = 30
DOCUMENTED_ADDRESS = "localhost:8000"


@dataclass
class Exchange:
    """What one command of a sequence answered."""

    step: ShellStep
    status: int | None  # None for a command that is not a request
    headers: dict[str, str]
    body: Any
    output: str = ""


class Sequence:
    """Runs one ```sh block's commands in order against a server, as a reader would."""

    def __init__(self, server: Server, environment: dict[str, str]):
        self.address = f"127.0.0.1:{server.port}"
        self.environment = environment
        # Shell variables the reader sets along the way: $TOKEN from the first token answered.
        self.variables: dict[str, str] = {}

    def run(self, step: ShellStep) -> Exchange:
        assignment = re.fullmatch(r"(\w+)=\$\((.*)\)", step.command)
        if assignment:
            output = self.shell(assignment[2])
            self.variables[assignment[1]] = output.strip()
            return Exchange(step, None, {}, None, output)
        if not step.command.startswith("curl "):
            return Exchange(step, None, {}, None, self.shell(step.command))
        words = [self.fill(word) for word in shlex.split(step.command)]
        curl = shutil.which("curl") or skip_or_fail_in_ci("curl is not installed")
        done = subprocess.run(
            [curl, "--include", "--max-time", str(TIMEOUT), *words[1:]],
            capture_output=True, timeout=TIMEOUT + 5, check=True,
        )  # fmt: skip
        head, _, body = done.stdout.decode().partition("\r\n\r\n")
        status_line, *header_lines = head.split("\r\n")
        # Header names are case-insensitive, and HTTP/1.1 servers send them as they like.
        fields = (line.split(": ", 1) for line in header_lines)
        headers = {name.lower(): value for name, value in fields}
        answer = json.loads(body) if body else None
        if isinstance(answer, dict) and "token" in answer:
            self.variables.setdefault("TOKEN", answer["token"])
        return Exchange(step, int(status_line.split()[1]), headers, answer)

    def fill(self, word: str) -> str:
        for name, value in self.variables.items():
            word = word.replace(f"${name}", value)
        return word.replace(DOCUMENTED_ADDRESS, self.address)

    def shell(self, command: str) -> str:
        """Run a command that is not a request (the flask CLI) in a terminal of its own, as a
        reader would, typing the password whenever it asks; return what it printed."""
        command = command.replace(".venv/bin/", f"{Path(sys.executable).parent}/")
        controller, terminal = pty.openpty()
        process = subprocess.Popen(
            ["bash", "-c", command], stdin=terminal, stdout=terminal, stderr=terminal,
            env=self.environment, cwd=ROOT, start_new_session=True,
        )  # fmt: skip
        os.close(terminal)
        printed, deadline = "", time.monotonic() + TIMEOUT
        try:
            while time.monotonic() < deadline:
                if not select.select([controller], [], [], deadline - time.monotonic())[0]:
                    break
                try:
                    chunk = os.read(controller, 4096).decode()
                except OSError:  # the command has ended and closed its terminal
                    break
                printed += chunk
                if chunk.rstrip().endswith(":"):  # a prompt: Password, Repeat for confirmation
                    os.write(controller, f"{PASSWORD}\n".encode())
            assert process.wait(TIMEOUT) == 0, printed
        finally:
            os.close(controller)
            if process.poll() is None:
                process.kill()
        return printed.replace("\r\n", "\n")


Check = Callable[[list[Exchange], Sequence], None]


def status(*expected: int) -> Check:
    def check(exchanges, _):
        assert [e.status for e in exchanges] == list(expected), [e.status for e in exchanges]

    return check


def again(status: int | None = None, body: Any = ...) -> Check:
    """Sent once more, the last command answers this status or body."""

    def check(exchanges, sequence):
        repeated = sequence.run(exchanges[-1].step)
        if status is not None:
            assert repeated.status == status, (repeated.status, repeated.body)
        if body is not ...:
            assert repeated.body == body, repeated.body

    return check


def same_answer_again(exchanges, sequence):
    first = exchanges[-1]
    repeated = sequence.run(first.step)
    assert (repeated.status, repeated.body) == (first.status, first.body), repeated.body


def header(name: str, pattern: str) -> Check:
    """The last answer has the header, `...` standing for any text."""

    def check(exchanges, _):
        value = exchanges[-1].headers.get(name.lower())
        regex = ".*".join(map(re.escape, pattern.split("...")))
        assert value is not None and re.fullmatch(regex, value), value

    return check


def open_and_due_within(days: int, which: int = -1) -> Check:
    def check(exchanges, _):
        todos = exchanges[which].body
        limit = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=days)
        assert todos, "no todo to show the filter"
        for todo in todos:
            assert not todo["completed"], todo
            assert datetime.fromisoformat(todo["deadline_at"]) <= limit, todo

    return check


def the_todo(which: int = -1, **fields: Any) -> Check:
    def check(exchanges, _):
        todo = exchanges[which].body
        assert {name: todo[name] for name in fields} == fields, todo

    return check


def ids(expected: list[int], which: int = -1) -> Check:
    """The answer is the list of exactly these todos."""

    def check(exchanges, _):
        assert [todo["id"] for todo in exchanges[which].body] == expected, exchanges[which].body

    return check


def printed(text: str) -> Check:
    def check(exchanges, _):
        assert text in exchanges[-1].output, exchanges[-1].output

    return check


def bearer(sequence: Sequence, token: str, path: str) -> int | None:
    step = ShellStep(f'curl -s {DOCUMENTED_ADDRESS}{path} -H "Authorization: Bearer {token}"')
    return sequence.run(step).status


def logged_in_on_two_devices(exchanges, _):
    laptop, phone = (exchange.body for exchange in exchanges)
    assert (laptop["name"], phone["name"]) == ("laptop", "phone")
    assert laptop["token"] != phone["token"]


def whoami_tokens_and_revoked_phone(exchanges, sequence):
    me, tokens, _ = (exchange.body for exchange in exchanges)
    assert me["username"] == "alice", me
    assert "todo_" not in json.dumps(tokens), tokens
    phone = sequence.variables["PHONE"]
    assert bearer(sequence, phone, "/api/v1/todos") == 401


def account_gone_and_username_free(exchanges, sequence):
    assert bearer(sequence, sequence.variables["TOKEN"], "/api/v1/users/me") == 401
    register = curl_blocks(BEHAVIOUR)[1][0]
    assert sequence.run(register).status == 201


def remember_the_phone(exchanges, sequence):
    sequence.variables["PHONE"] = exchanges[-1].body["token"]


README = ROOT / "README.md"
BEHAVIOUR = ROOT / "docs" / "behaviour.md"


def curl_blocks(path: Path) -> list[list[ShellStep]]:
    """Return the ```sh blocks of a document that send requests: the sequences to run.

    Both documents have exactly three; another one fails the tests until it is run here too.
    """
    blocks = [
        block
        for block in shell_blocks(path.read_text())
        if any(step.command.startswith("curl ") for step in block)
    ]
    assert len(blocks) == 3, f"{path.name} has {len(blocks)} sequences of requests"
    return blocks


# Each claim of the docs, word for word, and how it is checked.
CLAIMS: dict[str, list[Check]] = {
    # README: the quick tour on a fresh database
    "retry safely": [status(201), same_answer_again],
    "open, due within 7 days": [status(200), open_and_due_within(7)],
    'Link: </api/v1/todos?limit=1&after=1>; rel="next"': [
        status(200),
        header("Link", '</api/v1/todos?limit=1&after=1>; rel="next"'),
    ],
    "304: unchanged": [status(304)],
    "200; sent again, 412: it has changed": [status(200), again(status=412)],
    "200, the deleted todo; sent again, {}": [status(200), the_todo(id=1), again(200, {})],
    # README: the first token with the command line
    "asks for a password": [printed("Password")],
    # docs/behaviour.md: a walk through the API
    "Check the service and its database": [status(200), the_todo(status="ok")],
    "Create a todo (title is required; description, completed and deadline_at are optional)": [
        status(201),
        the_todo(completed=False, description=None, deadline_at="2023-02-27T00:00:00"),
    ],
    "Create it at most once, however often the request is retried": [
        status(201),
        same_answer_again,
    ],
    "List all todos; the open ones due within 7 days (overdue included); one per page": [
        status(200, 200, 200, 200),
        ids([1, 2], which=0),
        open_and_due_within(7, which=1),
        ids([1], which=2),
        ids([2], which=3),
    ],
    'Link: <...&after=1>; rel="next"': [header("Link", '<...&after=1>; rel="next"')],
    "Get one todo; again only if it changed since the ETag you hold (304 if not)": [
        status(200, 304)
    ],
    "Change some fields (PUT and PATCH both update only what is sent)": [
        status(200),
        the_todo(completed=True, title="Watch CSSE6400 Lecture"),
    ],
    '... only if nobody changed it since you read version "1-2" (412 otherwise)': [
        status(200),
        the_todo(description=None, completed=True),
        again(status=412),
    ],
    "Delete a todo (answers the deleted todo; {} when it is already gone)": [
        status(200),
        the_todo(id=1),
        again(200, {}),
    ],
    # docs/behaviour.md: an account's life (AUTH token, REGISTRATION open)
    "Register (REGISTRATION closed, the default: 403; `flask --app todo users create` instead)": [
        status(201),
        the_todo(username="alice"),
    ],
    "Log in with HTTP Basic for a token, shown this once ($TOKEN below); optional name and "
    "lifetime. Each device logs in for a token of its own.": [
        status(201, 201),
        logged_in_on_two_devices,
        remember_the_phone,
    ],
    "Use it": [status(200), ids([])],
    "Who am I; my tokens (never their secrets); revoke the phone's (refused at once, on every "
    "worker)": [status(200, 200, 200), whoami_tokens_and_revoked_phone],
    "Delete the account with its todos, tokens and idempotency keys; the username is free again": [
        status(200),
        account_gone_and_username_free,
    ],
}


class TestDocumentedSequences(unittest.TestCase):
    slow = True

    def run_sequence(self, steps: list[ShellStep], **settings: str) -> None:
        folder = self.enterContext(tempfile.TemporaryDirectory())
        database = f"sqlite:///{folder}/todo.sqlite"
        server = Server(database, workers=1, env=settings)
        self.addCleanup(server.close)
        server.start()
        sequence = Sequence(server, os.environ | settings | {"DATABASE_URL": database})
        # The commands under one heading; its claim is checked before the next group runs.
        heading, group = "", []
        for step in [*steps, None]:
            if step is None or step.heading != heading:
                if heading:
                    with self.subTest(heading=heading[:70]):
                        self.check(heading, group, sequence)
                if step is None:
                    break
                heading, group = step.heading, []
            exchange = sequence.run(step)
            group.append(exchange)
            with self.subTest(command=step.command[:70]):
                if step.note:
                    self.check(step.note, [exchange], sequence)
                elif exchange.status is not None and not step.heading and not step.output:
                    self.assertLess(exchange.status, 300, exchange.body)
                if step.output:
                    self.assertEqual(exchange.body, json.loads(step.output))

    def check(self, claim: str, exchanges: list[Exchange], sequence: Sequence) -> None:
        self.assertIn(claim, CLAIMS, "a claim of the docs with no check here")
        for check in CLAIMS[claim]:
            check(exchanges, sequence)

    def test_the_readme_quick_tour_and_its_error(self):
        tour, error, _ = curl_blocks(README)
        self.run_sequence(tour)
        self.run_sequence(error)

    def test_the_readme_first_token(self):
        _, _, first_token = curl_blocks(README)
        self.run_sequence(first_token, TODO_AUTH="token")

    def test_the_walk_through_the_api_and_the_error_example(self):
        walk, _, error = curl_blocks(BEHAVIOUR)
        self.run_sequence(walk)
        self.run_sequence(error)

    def test_an_accounts_life(self):
        _, accounts, _ = curl_blocks(BEHAVIOUR)
        self.run_sequence(accounts, TODO_AUTH="token", TODO_REGISTRATION="open")


class TestReadmeSyncLoop(unittest.TestCase):
    """The README's sync loop, run as it is against a live server."""

    slow = True

    def setUp(self) -> None:
        folder = self.enterContext(tempfile.TemporaryDirectory())
        self.server = Server(f"sqlite:///{folder}/todo.sqlite", workers=1)
        self.addCleanup(self.server.close)
        self.server.start()
        self.base = f"http://127.0.0.1:{self.server.port}/api/v1"
        section = README.read_text().split("## Sync", 1)[1]
        (code,) = re.findall(r"^```python\n(.*?)^```", section, re.MULTILINE | re.DOTALL)[:1]
        namespace: dict[str, Any] = {}
        exec(code, namespace)  # the README's own code, as a reader runs it
        self.sync = namespace["sync"]

    def request(self, method: str, path: str, body: dict | None = None) -> Any:
        with self.server.client() as client:
            response = client.request(method, f"/api/v1{path}", body)
        self.assertLess(response.status, 300, response.body)
        return response.json()

    def listed(self) -> dict[int, dict]:
        return {todo["id"]: todo for todo in self.request("GET", "/todos")}

    def test_it_keeps_a_replica_equal_to_the_list_and_starts_over_on_410(self):
        for number in range(3):
            self.request("POST", "/todos", {"title": f"todo {number}"})
        replica: dict[int, dict] = {}
        cursor = self.sync(replica, "", base=self.base)
        self.assertEqual(replica, self.listed())
        self.request("PATCH", "/todos/1", {"completed": True})
        self.request("DELETE", "/todos/2")
        self.request("POST", "/todos", {"title": "new"})
        cursor = self.sync(replica, cursor, base=self.base)
        self.assertEqual(replica, self.listed())
        # A cursor the server did not sign is a 410: the loop drops the copy and starts over.
        # (A character in its signature changed; the last one's spare bits would be a 400.)
        replica[99] = {"id": 99, "title": "only in the copy"}
        forged = cursor[:-5] + ("A" if cursor[-5] != "A" else "B") + cursor[-4:]
        self.sync(replica, forged, base=self.base)
        self.assertEqual(replica, self.listed())
