"""Long lists are streamed in pages read as they are sent, and still form one exact list."""

from datetime import UTC, datetime, timedelta
from unittest import mock

from sqlalchemy import insert

from tests.base import AppTestCase, across_databases
from todo import lists
from todo.models import db
from todo.models.todo import Todo

COUNT = lists.STREAM_BATCH * 2 + 7


@across_databases
class TestStreamedList(AppTestCase):
    def setUp(self) -> None:
        super().setUp()
        now = datetime.now(UTC).replace(microsecond=0)
        rows = [
            {
                "title": f"todo {number}",
                "description": None,
                "completed": number % 3 == 0,
                "deadline_at": now + timedelta(days=number % 20 - 5) if number % 2 else None,
                "created_at": now,
                "updated_at": now,
                "version": 1,
            }
            for number in range(1, COUNT + 1)
        ]
        with self.app.app_context():
            db.session.execute(insert(Todo), rows)
            db.session.commit()

    def test_whole_list_arrives_in_order_across_pages(self):
        response = self.client.get("/api/v1/todos")
        self.assertTrue(response.is_streamed)
        todos = response.get_json()
        self.assertEqual([todo["id"] for todo in todos], list(range(1, COUNT + 1)))
        self.assertEqual(todos[-1]["title"], f"todo {COUNT}")

    def test_filters_hold_on_every_page(self):
        for completed in (True, False):
            expected = [
                number
                for number in range(1, COUNT + 1)
                if (number % 3 == 0) == completed and number % 2 and number % 20 - 5 <= 3
            ]
            query = f"/api/v1/todos?completed={str(completed).lower()}&window=3"
            # Open todos are read through their index or walked to (todo.lists): one list,
            # in batches of 100 here, so that each way spans batches.
            for index_batches in (0, 10**6):
                with (
                    self.subTest(query=query, index_batches=index_batches),
                    mock.patch.object(lists, "INDEX_BATCHES", index_batches),
                    mock.patch.object(lists, "STREAM_BATCH", 100),
                ):
                    todos = self.client.get(query).get_json()
                    self.assertEqual([todo["id"] for todo in todos], expected)
                    self.assertEqual({todo["completed"] for todo in todos}, {completed})
                    self.assertGreater(len(todos), 100)

    def test_paging_through_limit_and_after_matches_the_whole_list(self):
        whole = self.client.get("/api/v1/todos").get_json()
        walked, url = [], "/api/v1/todos?limit=1000"
        while url:
            response = self.client.get(url)
            walked += response.get_json()
            link = response.headers.get("Link")
            url = link[1 : link.index(">")] if link else None
        self.assertEqual(walked, whole)
