"""The index at / and /api/v1: links a newcomer can follow, public, without the database."""

from tests.base import TOKEN_MODE, AppTestCase
from tests.test_errors import closed_loopback_port
from todo.openapi import Index

INDEX_PATHS = ("/", "/api/v1", "/api/v1/")
LINKS = {
    "docs": "/api/v1/docs",
    "openapi": "/api/v1/openapi.json",
    "todos": "/api/v1/todos",
    "health": "/api/v1/health",
}


class TestIndex(AppTestCase):
    def test_each_path_answers_the_links_without_a_redirect(self):
        for path in INDEX_PATHS:
            with self.subTest(path=path):
                response = self.client.get(path)
                self.assertEqual(response.status_code, 200)
                self.assertEqual(response.mimetype, "application/json")
                self.assertEqual(response.get_json(), {"links": LINKS})
                Index.model_validate(response.get_json())

    def test_every_link_answers(self):
        for name, link in self.client.get("/").get_json()["links"].items():
            with self.subTest(name=name):
                self.assertEqual(self.client.get(link).status_code, 200)

    def test_is_documented_with_its_schema(self):
        document = self.client.get("/api/v1/openapi.json").get_json()
        answer = document["paths"]["/"]["get"]["responses"]["200"]
        self.assertEqual(
            answer["content"]["application/json"]["schema"], {"$ref": "#/components/schemas/Index"}
        )
        self.assertIn("root `/`", document["paths"]["/"]["get"]["description"])


class TestTokenModeIndex(AppTestCase):
    config = TOKEN_MODE

    def test_needs_no_token_and_links_the_accounts(self):
        expected = LINKS | {"users": "/api/v1/users", "tokens": "/api/v1/tokens"}
        for path in INDEX_PATHS:
            with self.subTest(path=path):
                response = self.client.get(path)
                self.assertEqual(response.status_code, 200)
                self.assertEqual(response.get_json(), {"links": expected})

    def test_is_public_in_the_document(self):
        document = self.client.get("/api/v1/openapi.json").get_json()
        self.assertEqual(document["paths"]["/"]["get"]["security"], [])


class TestIndexWithoutTheDatabase(AppTestCase):
    def make_app(self, **overrides):
        url = f"postgresql://postgres@127.0.0.1:{closed_loopback_port()}/todo"
        return super().make_app(
            SQLALCHEMY_DATABASE_URI=url, SCHEMA_AUTO_UPGRADE=False, **TOKEN_MODE, **overrides
        )

    def test_answers_while_the_database_is_down(self):
        self.assertEqual(self.client.get("/api/v1/health").status_code, 503)
        for path in INDEX_PATHS:
            with self.subTest(path=path):
                self.assertEqual(self.client.get(path).status_code, 200)
