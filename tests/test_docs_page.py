"""The docs page in a real headless Chromium with no internet: it lists every operation, and in
AUTH token its Authorize dialog and "Try it out" act as the user whose token was given."""

import fcntl
import json
import os
import select
import shutil
import signal
import subprocess
import tempfile
import time
import unittest
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from tests.base import PASSWORD, basic, bearer, skip_or_fail_in_ci
from tests.server import Client, Server
from todo import create_app
from todo.openapi import openapi_document

CHROMIUM = "chromium"
# Virtual time lets the page's scripts run to completion without a wall-clock wait.
VIRTUAL_TIME_BUDGET_MS = 15000
CHROMIUM_TIMEOUT = 120
# Chromium's own calls home are switched off: the page must render from the service alone.
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
)


class OperationsOnPage(HTMLParser):
    """Collect Swagger UI's operation rows: (method, path, summary) from the rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.operations: list[dict[str, str]] = []
        self._reading: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        classes = (attributes.get("class") or "").split()
        if "opblock" in classes:
            self.operations.append({"method": "", "path": "", "summary": ""})
        elif not self.operations:
            return
        if "opblock-summary-method" in classes:
            self._reading = "method"
        elif "opblock-summary-description" in classes:
            self._reading = "summary"
        if "opblock-summary-path" in classes and attributes.get("data-path"):
            self.operations[-1]["path"] = attributes["data-path"]

    def handle_endtag(self, tag: str) -> None:
        self._reading = None

    def handle_data(self, data: str) -> None:
        if self._reading is not None:
            self.operations[-1][self._reading] += data


def render(url: str, profile: Path) -> str:
    """Load a page in headless Chromium and return its DOM once its scripts have run."""
    command = [
        CHROMIUM,
        *CHROMIUM_FLAGS,
        f"--user-data-dir={profile}",
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
        "--dump-dom",
        url,
    ]
    result = subprocess.run(
        command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT
    )
    if result.returncode != 0:
        raise AssertionError(f"chromium exited with {result.returncode}:\n{result.stderr}")
    return result.stdout


def documented_operations() -> set[tuple[str, str, str]]:
    """Return (method, path, summary) of every operation in the app's document."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", "TESTING": True})
    return {
        (method.upper(), path, operation["summary"])
        for path, item in openapi_document(app)["paths"].items()
        for method, operation in item.items()
    }


class TestDocsPage(unittest.TestCase):
    """gunicorn serves the page and its assets; Chromium has nowhere else to fetch them from."""

    slow = True

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if shutil.which(CHROMIUM) is None:
            skip_or_fail_in_ci("chromium is not installed (apt-get install -y chromium)")
        folder = tempfile.TemporaryDirectory()
        cls.addClassCleanup(folder.cleanup)
        server = Server(f"sqlite:///{Path(folder.name) / 'db.sqlite'}", workers=1).start()
        cls.addClassCleanup(server.close)
        port = server.port
        cls.dom = render(f"http://127.0.0.1:{port}/api/v1/docs", Path(folder.name) / "profile")
        cls.server_log = server.log()

    def test_page_lists_every_operation_with_its_summary(self):
        page = OperationsOnPage()
        page.feed(self.dom)
        shown = {
            (row["method"].strip(), row["path"], row["summary"].strip()) for row in page.operations
        }
        self.assertEqual(shown, documented_operations(), self.dom[-3000:])

    def test_page_loads_its_assets_from_the_service(self):
        requested = [line for line in self.server_log.splitlines() if '"GET /api/v1/' in line]
        for path in ("/docs/swagger-ui-bundle.js", "/docs/swagger-ui.css", "/openapi.json"):
            with self.subTest(path=path):
                self.assertTrue(
                    any(f'"GET /api/v1{path} HTTP/1.1" 200' in line for line in requested),
                    "\n".join(requested),
                )


# Each step of a page driven over the DevTools protocol must finish within this.
STEP_TIMEOUT = 30.0

# Waits in the page until an element is there: the test waits on the page, not on a clock.
_WAIT_FOR = """(selector, ms) => new Promise((resolve, reject) => {
  const found = () => document.querySelector(selector);
  if (found()) return resolve(true);
  const observer = new MutationObserver(() => {
    if (found()) { observer.disconnect(); clearTimeout(timer); resolve(true); }
  });
  const timer = setTimeout(() => {
    observer.disconnect();
    reject(new Error(`${selector} did not appear`));
  }, ms);
  observer.observe(document, {subtree: true, childList: true, attributes: true});
})"""
# Runs before the page's own scripts, in every document: records each CSP violation.
_RECORD_VIOLATIONS = """window.cspViolations = [];
document.addEventListener("securitypolicyviolation", (event) => {
  window.cspViolations.push(`${event.effectiveDirective} ${event.blockedURI}`);
});"""
_CENTRE_OF = """(selector) => {
  const element = document.querySelector(selector);
  element.scrollIntoView({block: "center"});
  const box = element.getBoundingClientRect();
  return [box.x + box.width / 2, box.y + box.height / 2];
}"""


def _above_four(descriptor: int) -> int:
    moved = fcntl.fcntl(descriptor, fcntl.F_DUPFD_CLOEXEC, 5)
    os.close(descriptor)
    return moved


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe: no port, no network."""

    def __init__(self, profile: Path, log) -> None:
        commands, self._to_browser = os.pipe()
        self._from_browser, answers = os.pipe()
        # --remote-debugging-pipe reads commands on descriptor 3 and answers on 4; bash
        # puts the pipes there, from numbers above 4 so that neither move overwrites the other.
        commands, answers = _above_four(commands), _above_four(answers)
        shell = f'exec "$0" "$@" 3<&{commands} 4>&{answers}'
        self.process = subprocess.Popen(
            ["bash", "-c", shell, CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
            + ["--remote-debugging-pipe", "about:blank"],
            pass_fds=(commands, answers),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            # A group of its own, so that closing it takes every Chromium process and no other.
            start_new_session=True,
        )
        os.close(commands)
        os.close(answers)
        self._unread = b""
        self._last_id = 0
        self.events: list[dict[str, Any]] = []

    def send(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and return its result; events that come first are kept."""
        self._last_id += 1
        message: dict[str, Any] = {"id": self._last_id, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._receive()
            if answer.get("id") != self._last_id:
                self.events.append(answer)
            elif "error" in answer:
                raise AssertionError(f"{method}: {answer['error']}")
            else:
                return answer["result"]

    def _receive(self) -> dict[str, Any]:
        deadline = time.monotonic() + STEP_TIMEOUT
        while b"\0" not in self._unread:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_browser], [], [], left)[0]:
                raise TimeoutError(f"chromium did not answer within {STEP_TIMEOUT} s")
            data = os.read(self._from_browser, 1 << 16)
            if not data:
                raise AssertionError("chromium closed the DevTools pipe")
            self._unread += data
        message, _, self._unread = self._unread.partition(b"\0")
        return json.loads(message)

    def close(self) -> None:
        """Stop Chromium and every process it started."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(STEP_TIMEOUT)
        os.close(self._to_browser)
        os.close(self._from_browser)


class Tab:
    """One page of the browser, used as a person would: clicks and typing."""

    def __init__(self, browser: Browser) -> None:
        self.browser = browser
        target = browser.send("Target.createTarget", url="about:blank")["targetId"]
        attached = browser.send("Target.attachToTarget", targetId=target, flatten=True)
        self.session = attached["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable")
        self.send("Page.addScriptToEvaluateOnNewDocument", source=_RECORD_VIOLATIONS)

    def send(self, method: str, **params: Any) -> dict[str, Any]:
        return self.browser.send(method, self.session, **params)

    def call(self, function: str, *arguments: Any) -> Any:
        """Call a JavaScript function in the page, wait for its promise, return its value."""
        expression = f"({function})(...{json.dumps(arguments)})"
        result = self.send(
            "Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True
        )
        if "exceptionDetails" in result:
            raise AssertionError(result["exceptionDetails"]["exception"]["description"])
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def wait_for(self, selector: str) -> None:
        self.call(_WAIT_FOR, selector, int(STEP_TIMEOUT * 1000 / 2))

    def click(self, selector: str) -> None:
        """Click the middle of an element with the mouse, once it is there."""
        self.wait_for(selector)
        x, y = self.call(_CENTRE_OF, selector)
        for event in ("mousePressed", "mouseReleased"):
            self.send("Input.dispatchMouseEvent", type=event, x=x, y=y, button="left", clickCount=1)

    def type(self, selector: str, text: str) -> None:
        """Click into a field and type a text."""
        self.click(selector)
        self.send("Input.insertText", text=text)

    def text(self, selector: str) -> str:
        return self.call("(selector) => document.querySelector(selector).textContent", selector)

    def errors(self) -> list[str]:
        """Return the page's CSP violations and the errors its console logged."""
        logged = [
            event["params"]["entry"]["text"]
            for event in self.browser.events
            if event.get("sessionId") == self.session
            and event.get("method") == "Log.entryAdded"
            and event["params"]["entry"]["level"] == "error"
        ]
        return self.call("() => window.cspViolations") + logged


def _sign_up(client: Client, username: str, titles: list[str]) -> str:
    """Register a user, log in for a token and create todos with it; return the token."""
    body = {"username": username, "password": PASSWORD}
    assert client.request("POST", "/api/v1/users", body).status == 201
    login = client.request("POST", "/api/v1/tokens", headers=basic(username, PASSWORD))
    assert login.status == 201, login.body
    token = login.json()["token"]
    for title in titles:
        created = client.request("POST", "/api/v1/todos", {"title": title}, bearer(token))
        assert created.status == 201, created.body
    return token


class TestDocsPageAuthorizes(unittest.TestCase):
    """AUTH token: a user authorizes with their token in Swagger UI and lists their todos.

    `todo serve` runs in token mode; two users exist, made through the API beforehand.
    """

    slow = True
    LIST_TODOS = "#operations-todos-list_todos"

    @classmethod
    def setUpClass(cls) -> None:
        super().setUpClass()
        if shutil.which(CHROMIUM) is None:
            skip_or_fail_in_ci("chromium is not installed (apt-get install -y chromium)")
        folder = Path(tempfile.mkdtemp())
        cls.addClassCleanup(shutil.rmtree, folder)
        env = {"TODO_AUTH": "token", "TODO_REGISTRATION": "open"}
        cls.server = Server(f"sqlite:///{folder / 'db.sqlite'}", workers=1, env=env).start()
        cls.addClassCleanup(cls.server.close)
        with cls.server.client() as client:
            cls.token = _sign_up(client, "alice", ["Alice's first", "Alice's second"])
            cls.other_token = _sign_up(client, "bob", ["Bob's own"])
        cls.browser_log = (folder / "chromium.log").open("wb")
        cls.addClassCleanup(cls.browser_log.close)
        cls.browser = Browser(folder / "profile", cls.browser_log)
        cls.addClassCleanup(cls.browser.close)

    def test_authorize_then_try_it_out_lists_that_users_todos(self):
        tab = Tab(self.browser)
        tab.open(f"http://127.0.0.1:{self.server.port}/api/v1/docs")
        tab.click(".auth-wrapper button.authorize")
        tab.type("#auth-bearer-value", self.token)
        tab.click(".auth-container:has(#auth-bearer-value) button.authorize")
        tab.wait_for('.auth-container:has(button[aria-label="Remove authorization"])')
        tab.click(".modal-ux button.btn-done")

        tab.click(f"{self.LIST_TODOS} .opblock-summary-control")
        tab.click(f"{self.LIST_TODOS} button.try-out__btn")
        tab.click(f"{self.LIST_TODOS} button.execute")
        answer = f"{self.LIST_TODOS} .live-responses-table tr.response"
        tab.wait_for(answer)

        self.assertEqual(tab.text(f"{answer} .response-col_status").strip(), "200")
        todos = json.loads(tab.text(f"{answer} .highlight-code pre"))
        self.assertEqual([todo["title"] for todo in todos], ["Alice's first", "Alice's second"])
        self.assertEqual(tab.errors(), [])
        # The token went in a header, never into a URL the server logs.
        self.assertNotIn(self.token, self.server.log())
