"""The README's lighter way to try the service, and starting over, work as it says."""

import os
import subprocess
import sys
import tempfile
import time
import unittest
import urllib.request
from pathlib import Path

from tests.server import free_port

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT = 30


class TestFlaskDevelopmentServer(unittest.TestCase):
    slow = True

    def test_flask_run_debug_serves_the_api_and_a_deleted_file_starts_over(self):
        with tempfile.TemporaryDirectory() as folder:
            database = Path(folder) / "db.sqlite"
            port = free_port()
            environment = os.environ | {"DATABASE_URL": f"sqlite:///{database}"}
            for name in ("TODO_SQLALCHEMY_DATABASE_URI", "TODO_AUTH"):
                environment.pop(name, None)
            command = [sys.executable, "-m", "flask", "--app", "todo", "run", "--debug"]
            command += ["--port", str(port), "--no-reload"]
            base = f"http://127.0.0.1:{port}/api/v1"
            for run in ("first", "after starting over"):
                with self.subTest(run=run):
                    server = subprocess.Popen(
                        command,
                        cwd=ROOT,
                        env=environment,
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                    try:
                        self.wait_for(f"{base}/health")
                        request = urllib.request.Request(
                            f"{base}/todos",
                            data=b'{"title": "try it"}',
                            headers={"Content-Type": "application/json"},
                        )
                        with urllib.request.urlopen(request, timeout=10) as response:
                            # A fresh database hands out id 1, also after starting over.
                            self.assertEqual(response.status, 201)
                            self.assertEqual(response.headers["Location"], "/api/v1/todos/1")
                    finally:
                        server.terminate()
                        server.wait(timeout=10)
                    # Starting over: stop the service and delete the database's files.
                    for path in Path(folder).glob("db.sqlite*"):
                        path.unlink()

    def wait_for(self, url: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                self.assertLess(time.monotonic(), deadline, f"{url} did not answer")
                # Not a timing assumption: only a pause between polls of a bounded wait.
                time.sleep(0.1)
