"""Password hashing: slow on purpose, so bounded in how many run at once in a worker."""

import threading
from concurrent.futures import ThreadPoolExecutor

from tests.base import PASSWORD, TOKEN_MODE, AppTestCase, basic
from todo import accounts


class TestHashesAtOnce(AppTestCase):
    config = TOKEN_MODE

    def test_a_burst_of_logins_hashes_at_most_two_passwords_at_once(self):
        hasher = accounts._hasher
        running = 0
        most = 0
        lock = threading.Lock()

        class CountingHasher:
            """The real hasher, counting how many verifications run at once."""

            def verify(self, *args):
                nonlocal running, most
                with lock:
                    running += 1
                    most = max(most, running)
                try:
                    return hasher.verify(*args)
                finally:
                    with lock:
                        running -= 1

        accounts._hasher = CountingHasher()  # type: ignore[assignment]
        self.addCleanup(setattr, accounts, "_hasher", hasher)

        def log_in(number: int) -> int:
            # Each from its own address, so that throttling does not step in.
            client = self.app.test_client()
            response = client.post(
                "/api/v1/tokens",
                headers=basic(f"user{number}", "a wrong password"),
                environ_base={"REMOTE_ADDR": f"10.0.0.{number + 1}"},
            )
            return response.status_code

        with ThreadPoolExecutor(max_workers=8) as pool:
            statuses = list(pool.map(log_in, range(8)))
        self.assertEqual(statuses, [401] * 8)
        self.assertEqual(most, accounts.HASHES_AT_ONCE)


class TestGuessesSentTogether(AppTestCase):
    config = TOKEN_MODE

    def test_a_right_password_that_ends_after_the_limit_was_reached_is_refused(self):
        # Guesses sent at once all pass the check made as they start. Here ten wrong ones
        # end while the right one is being hashed (the limit is then reached), which is what
        # a burst of concurrent guesses does: the right one must not get a token.
        self.client.post("/api/v1/users", json={"username": "alice", "password": PASSWORD})
        hasher = accounts._hasher
        client = self.app.test_client()

        class GuessesEndMeanwhile:
            def verify(self, *args):
                # A wrong password raises here, so only the right one goes on to the guesses.
                matches = hasher.verify(*args)
                for _ in range(10):
                    wrong = client.post("/api/v1/tokens", headers=basic("alice", "wrong guess"))
                    assert wrong.status_code == 401, wrong.status_code
                return matches

        accounts._hasher = GuessesEndMeanwhile()  # type: ignore[assignment]
        self.addCleanup(setattr, accounts, "_hasher", hasher)
        response = self.client.post("/api/v1/tokens", headers=basic("alice", PASSWORD))
        accounts._hasher = hasher
        self.assertEqual(response.status_code, 429, response.get_data(as_text=True))
        self.assertNotIn("token", response.get_json())
        self.assertLessEqual(int(response.headers["Retry-After"]), 900)
