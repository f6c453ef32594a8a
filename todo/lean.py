"""Flask, without per-request work that the API never needs (bench/README.md, issue 13).

The API keeps no sessions and has no async views or hooks, yet plain Flask opens a session
and asks `inspect` whether each hook and view is a coroutine function on every request.
"""

from collections.abc import Callable
from typing import Any

from flask import Flask
from flask.sessions import NullSession, SessionInterface

# More distinct callables than the app registers: past it, a caller that hands over a new one
# each time (no part of the app does) costs the plain check instead of growing the memory.
_REMEMBERED_CALLABLES = 1024


class NoSessions(SessionInterface):
    """No request has a session: each one gets the same empty, read-only one.

    What Flask gives an app without a secret key, minus a new object per request; writing to
    it raises, as it does there.
    """

    _session = NullSession()

    def open_session(self, app: Flask, request: Any) -> NullSession:
        return self._session

    def save_session(self, app: Flask, session: Any, response: Any) -> None:
        """Nothing to save (Flask does not even ask, for a null session)."""


class LeanFlask(Flask):
    """A Flask app that keeps no sessions and checks each callable for `async` only once."""

    session_interface = NoSessions()

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._sync_callables: dict[Callable[..., Any], Callable[..., Any]] = {}

    def ensure_sync(self, func: Callable[..., Any]) -> Callable[..., Any]:
        # Flask calls this for the view and every hook of every request; whether a function
        # is a coroutine function never changes, and asking `inspect` costs more than the
        # hook itself.
        sync = self._sync_callables.get(func)
        if sync is None:
            sync = super().ensure_sync(func)
            if len(self._sync_callables) < _REMEMBERED_CALLABLES:
                self._sync_callables[func] = sync
        return sync
