"""endpoints.http sent by httpyac, the command-line runner for .http files, to the real server
on a port of its own: every `# @expect` holds, and holds again on a second run."""

import json
import shutil
import subprocess
import tempfile
import unittest
from pathlib import Path

from tests.base import node_tools, skip_or_fail_in_ci
from tests.examples import ENDPOINTS_HTTP, ROOT, default_environment, endpoints_http
from tests.server import Server

# What a user has beside endpoints.http: httpyac's settings (the default address, and the hooks
# that read REST Client's request variables and `# @expect`) and the environments file.
SHIPPED = (ENDPOINTS_HTTP, ROOT / "httpyac.config.js", ROOT / "http-client.env.json")
TIMEOUT = 120


class TestEndpointsHttpWithHttpyac(unittest.TestCase):
    slow = True

    def setUp(self) -> None:
        self.bin = node_tools("httpyac")
        self.folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        for path in SHIPPED:
            shutil.copy(path, self.folder)

    def serve(self, **env: str) -> Server:
        server = Server(f"sqlite:///{self.folder}/todo.sqlite", workers=2, env=env)
        self.addCleanup(server.close)
        return server.start()

    def httpyac(self, *arguments: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(self.bin / "httpyac"), "send", "endpoints.http", "--json", *arguments],
            cwd=self.folder, capture_output=True, text=True, timeout=TIMEOUT,
        )  # fmt: skip

    def send(self, tag: str, server: Server) -> None:
        """Send the requests of a tag in an environment of the user's own, as httpyac runs
        them: each must pass its status check."""
        address = {"test": {"baseUrl": f"http://127.0.0.1:{server.port}/api/v1"}}
        (self.folder / "http-client.private.env.json").write_text(json.dumps(address))
        run = self.httpyac("--tag", tag, "--env", "test")
        self.assertEqual(run.returncode, 0, run.stdout[-3000:] + run.stderr[-3000:])
        report = json.loads(run.stdout)
        expected = [request for request in endpoints_http() if tag in request.tags]
        self.assertEqual(len(report["requests"]), len(expected))
        for sent, request in zip(report["requests"], expected, strict=True):
            with self.subTest(request=request.title):
                self.assertEqual(sent["response"]["statusCode"], request.expect)
                self.assertEqual(
                    [(test["message"], test["status"]) for test in sent["testResults"]],
                    [(f"status == {request.expect}", "SUCCESS")],
                )

    def test_the_todos_requests_hold_twice_in_a_row(self):
        server = self.serve()
        self.send("todos", server)
        self.send("todos", server)

    def test_the_accounts_requests_hold_twice_in_a_row(self):
        server = self.serve(TODO_AUTH="token", TODO_REGISTRATION="open")
        self.send("accounts", server)
        self.send("accounts", server)

    def test_a_status_other_than_the_expected_one_fails_the_run(self):
        server = self.serve()
        file = self.folder / "endpoints.http"
        file.write_text(file.read_text().replace("# @expect 304", "# @expect 200", 1))
        address = f"baseUrl=http://127.0.0.1:{server.port}/api/v1"
        run = self.httpyac("--tag", "todos", "--var", address)
        self.assertEqual(run.returncode, 20, run.stderr[-3000:])
        failed = [
            test["error"]["displayMessage"]
            for request in json.loads(run.stdout)["requests"]
            for test in request["testResults"]
            if test["status"] != "SUCCESS"
        ]
        self.assertEqual(failed, ["Error: status is 304, expected 200"])

    def test_without_an_environment_both_clients_use_the_address_the_service_listens_on(self):
        # httpyac's default lives in its settings (JavaScript), REST Client's in .vscode.
        node = shutil.which("node") or skip_or_fail_in_ci("node is not installed")
        read = "console.log(require('./httpyac.config.js').environments.$shared.baseUrl)"
        printed = subprocess.run(
            [node, "-e", read], cwd=self.folder, capture_output=True, text=True, timeout=TIMEOUT
        )
        self.assertEqual(printed.stdout.strip(), default_environment()["baseUrl"])
        self.assertEqual(default_environment()["baseUrl"], "http://127.0.0.1:8000/api/v1")
