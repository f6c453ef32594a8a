"""The app factory and the precedence of its settings."""

import os
import unittest
from unittest import mock

from sqlalchemy import inspect

from tests.base import AppTestCase
from todo import create_app
from todo.config import normalize_database_url
from todo.database import current_revision, head_revision
from todo.models import db

MEMORY = {"SQLALCHEMY_DATABASE_URI": "sqlite:///:memory:", "TESTING": True}


def clean_environment(**variables: str):
    """Run with no DATABASE_URL or TODO_ variables but the given ones."""
    kept = {
        name: value
        for name, value in os.environ.items()
        if name != "DATABASE_URL" and not name.startswith("TODO_")
    }
    return mock.patch.dict(os.environ, kept | variables, clear=True)


class TestSettings(unittest.TestCase):
    def test_defaults_apply_without_environment_or_overrides(self):
        with clean_environment():
            app = create_app({"SCHEMA_AUTO_UPGRADE": False})
        expected = "sqlite:///" + os.path.join(app.instance_path, "db.sqlite")
        self.assertEqual(app.config["SQLALCHEMY_DATABASE_URI"], expected)
        self.assertEqual(app.config["MAX_CONTENT_LENGTH"], 64 * 1024)
        self.assertTrue(os.path.isdir(app.instance_path))

    def test_database_url_sets_the_database(self):
        with clean_environment(DATABASE_URL="sqlite:///from-env.sqlite"):
            app = create_app({"SCHEMA_AUTO_UPGRADE": False})
        self.assertEqual(app.config["SQLALCHEMY_DATABASE_URI"], "sqlite:///from-env.sqlite")

    def test_prefixed_variable_beats_database_url(self):
        with clean_environment(
            DATABASE_URL="sqlite:///plain.sqlite",
            TODO_SQLALCHEMY_DATABASE_URI="sqlite:///prefixed.sqlite",
        ):
            app = create_app({"SCHEMA_AUTO_UPGRADE": False})
        self.assertEqual(app.config["SQLALCHEMY_DATABASE_URI"], "sqlite:///prefixed.sqlite")

    def test_prefixed_variables_set_any_setting_with_json_values(self):
        with clean_environment(TODO_MAX_CONTENT_LENGTH="1024", TODO_SOMETHING="plain text"):
            app = create_app(MEMORY)
        self.assertEqual(app.config["MAX_CONTENT_LENGTH"], 1024)
        self.assertEqual(app.config["SOMETHING"], "plain text")

    def test_overrides_beat_the_environment(self):
        with clean_environment(TODO_MAX_CONTENT_LENGTH="1024", DATABASE_URL="sqlite:///x"):
            app = create_app(MEMORY | {"MAX_CONTENT_LENGTH": 2048})
        self.assertEqual(app.config["MAX_CONTENT_LENGTH"], 2048)
        self.assertEqual(app.config["SQLALCHEMY_DATABASE_URI"], "sqlite:///:memory:")

    def test_plain_server_urls_use_the_installed_drivers(self):
        cases = {
            "postgres://u@h/d": "postgresql+psycopg://u@h/d",
            "postgresql://u@h/d": "postgresql+psycopg://u@h/d",
            "postgresql+psycopg://u@h/d": "postgresql+psycopg://u@h/d",
            "mysql://u@h/d": "mysql+pymysql://u@h/d",
            "mariadb://u@h/d": "mysql+pymysql://u@h/d",
            "sqlite:///x.sqlite": "sqlite:///x.sqlite",
        }
        for given, expected in cases.items():
            with self.subTest(url=given):
                self.assertEqual(normalize_database_url(given), expected)


class TestDatabases(unittest.TestCase):
    def test_each_in_memory_app_has_its_own_empty_database(self):
        first, second = create_app(MEMORY), create_app(MEMORY)
        first.test_client().post("/api/v1/todos", json={"title": "only in the first"})
        self.assertEqual(len(first.test_client().get("/api/v1/todos").get_json()), 1)
        self.assertEqual(second.test_client().get("/api/v1/todos").get_json(), [])

    def test_fresh_database_gets_the_latest_schema_on_first_start(self):
        app = create_app(MEMORY)
        with app.app_context(), db.engine.connect() as connection:
            self.assertIn("todos", inspect(connection).get_table_names())
            self.assertEqual(current_revision(connection), head_revision())

    def test_schema_auto_upgrade_can_be_turned_off(self):
        app = create_app(MEMORY | {"SCHEMA_AUTO_UPGRADE": False})
        with app.app_context(), db.engine.connect() as connection:
            self.assertEqual(inspect(connection).get_table_names(), [])


class TestTestBase(AppTestCase):
    def test_subset_helper_compares_only_the_expected_keys(self):
        self.assertDictContainsSubset({"a": 1}, {"a": 1, "b": 2})
        with self.assertRaises(AssertionError):
            self.assertDictContainsSubset({"a": 1, "c": 3}, {"a": 1})
