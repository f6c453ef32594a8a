"""The docs page, rendered by a real headless Chromium with no internet, lists every operation."""

import shutil
import subprocess
import tempfile
import unittest
from html.parser import HTMLParser
from pathlib import Path

from tests.base import skip_or_fail_in_ci
from tests.server import Server
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
