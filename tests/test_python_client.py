"""A typed Python client generated from the served document works without edits."""

import importlib
import os
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

from tests.base import skip_or_fail_in_ci
from tests.server import Server

GENERATOR = Path(sys.executable).parent / "openapi-python-client"
PACKAGE = "todo_client"


class TestGeneratedClient(unittest.TestCase):
    slow = True

    def setUp(self) -> None:
        if not GENERATOR.exists():
            skip_or_fail_in_ci("openapi-python-client is not installed (pip install -e '.[test]')")
        folder = tempfile.TemporaryDirectory()
        self.addCleanup(folder.cleanup)
        self.folder = Path(folder.name)
        self.server = Server(f"sqlite:///{self.folder}/todo.sqlite", workers=1).start()
        self.addCleanup(self.server.close)
        self.base_url = f"http://127.0.0.1:{self.server.port}/api/v1"

    def generate(self) -> None:
        """Generate the client from the document the server serves, as the docs show."""
        # The generator formats its output with ruff, which the venv has.
        path = os.pathsep.join([str(GENERATOR.parent), os.environ.get("PATH", "")])
        result = subprocess.run(
            [str(GENERATOR), "generate", "--url", f"{self.base_url}/openapi.json"]
            + ["--meta", "none", "--output-path", PACKAGE],
            cwd=self.folder,
            env=os.environ | {"PATH": path},
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        self.assertEqual(result.returncode, 0, result.stdout + result.stderr)
        sys.path.insert(0, str(self.folder))
        self.addCleanup(sys.path.remove, str(self.folder))
        self.addCleanup(self.forget_package)

    @staticmethod
    def forget_package() -> None:
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]

    def test_create_list_get_and_delete_through_the_generated_client(self):
        self.generate()
        client_module = importlib.import_module(f"{PACKAGE}.client")
        models = importlib.import_module(f"{PACKAGE}.models")
        create = importlib.import_module(f"{PACKAGE}.api.todos.create_todo")
        list_todos = importlib.import_module(f"{PACKAGE}.api.todos.list_todos")
        get = importlib.import_module(f"{PACKAGE}.api.todos.get_todo")
        delete = importlib.import_module(f"{PACKAGE}.api.todos.delete_todo")

        with client_module.Client(base_url=self.base_url) as client:
            created = create.sync(
                client=client, body=models.TodoCreate(title="Watch CSSE6400 Lecture")
            )
            self.assertIsInstance(created, models.TodoOut)
            self.assertEqual((created.id, created.completed), (1, False))
            listed = list_todos.sync(client=client, completed=False)
            self.assertEqual([todo.title for todo in listed], ["Watch CSSE6400 Lecture"])
            fetched = get.sync_detailed(todo_id=created.id, client=client)
            self.assertEqual(fetched.status_code, 200)
            self.assertEqual(fetched.parsed.to_dict(), created.to_dict())
            self.assertEqual(fetched.headers["ETag"], '"1-1"')
            deleted = delete.sync(todo_id=created.id, client=client)
            self.assertEqual(deleted.to_dict(), created.to_dict())
            missing = get.sync_detailed(todo_id=created.id, client=client)
            self.assertEqual(missing.status_code, 404)
            self.assertEqual(missing.parsed.status, 404)


if __name__ == "__main__":
    unittest.main()
