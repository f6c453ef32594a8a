"""The OpenAPI document passes the linters people run in CI: Redocly and Spectral, both modes."""

import json
import subprocess
import tempfile
import unittest
from pathlib import Path

from tests.base import TOKEN_MODE, node_tools
from todo import create_app
from todo.openapi import openapi_document

ROOT = Path(__file__).resolve().parent.parent
# Redocly's `recommended` ruleset with two rules off, for reasons of the API, not the document:
# - operation-4xx-response: the health check and the index have no client error to answer
#   (any method they do not allow is a 405 of the path, not of the operation);
# - info-license-strict: the package declares no license yet, so the document names none by
#   SPDX identifier rather than invent one.
REDOCLY_CONFIG = """extends: [recommended]
rules:
  operation-4xx-response: off
  info-license-strict: off
"""
BINARIES = ("redocly", "spectral")


class TestLinters(unittest.TestCase):
    slow = True

    def setUp(self) -> None:
        self.bin = node_tools(*BINARIES)
        self.folder = Path(self.enterContext(tempfile.TemporaryDirectory()))
        (self.folder / "redocly.yaml").write_text(REDOCLY_CONFIG)

    def document(self, **config) -> Path:
        app = create_app(
            {"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", "TESTING": True, **config}
        )
        path = self.folder / f"openapi-{app.config['AUTH']}.json"
        path.write_text(json.dumps(openapi_document(app)))
        return path

    def run_linter(self, *command: str) -> str:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, cwd=self.folder
        )
        output = result.stdout + result.stderr
        self.assertEqual(result.returncode, 0, output)
        return output

    def test_both_documents_have_no_errors_or_warnings(self):
        for config in ({}, TOKEN_MODE):
            document = str(self.document(**config))
            with self.subTest(auth=config.get("AUTH", "none"), linter="redocly"):
                output = self.run_linter(
                    str(self.bin / "redocly"), "lint", "--config", "redocly.yaml", document
                )
                self.assertNotIn("warning", output.replace("Deprecation warning", ""))
            with self.subTest(auth=config.get("AUTH", "none"), linter="spectral"):
                self.run_linter(
                    str(self.bin / "spectral"),
                    "lint",
                    "--ruleset",
                    str(ROOT / ".spectral.yaml"),
                    "--fail-severity",
                    "hint",
                    document,
                )
