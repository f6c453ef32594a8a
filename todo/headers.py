"""Headers that responses carry whatever answered them: security, caching, and CORS."""

from collections.abc import Iterable
from typing import TYPE_CHECKING

from flask import Flask, Response
from flask_cors import CORS

from todo.auth import is_bearer

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment

# What a browser app on an allowed origin may send and read (CORS_ORIGINS).
CORS_ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
)
CORS_EXPOSED_HEADERS = ("ETag", "Location", "Link", "Retry-After", "Idempotent-Replayed")
_NOSNIFF = ("X-Content-Type-Options", "nosniff")
# The headers a bearer request's answer gets in place of any it had (by lower-case name).
_REPLACED = frozenset({"cache-control", "vary"})


def _add_security_headers(headers: list[tuple[str, str]], bearer: bool) -> None:
    # Browsers must take a response for the type it says it is: a JSON body is never run as
    # a script or shown as a page, whatever a client managed to put in it. (No response of
    # the app sets this header itself, so it is added, not replaced.)
    headers.append(_NOSNIFF)
    if not bearer:
        return
    # An answer to a bearer request is that user's alone, error or not: no shared cache may
    # keep it, and a private one must not hand it to a request with another token.
    vary = next((value for name, value in headers if name.lower() == "vary"), None)
    headers[:] = [header for header in headers if header[0].lower() not in _REPLACED]
    headers.append(("Cache-Control", "private"))
    headers.append(("Vary", f"{vary}, Authorization" if vary else "Authorization"))


class SecurityHeaders:
    """WSGI middleware that adds the headers to every response of the app, errors included.

    Added as the response starts rather than by an after_request hook, which cost each
    request a twentieth of its time in Flask's hook machinery and Werkzeug's header
    bookkeeping (bench/README.md, issue 13).
    """

    def __init__(self, wsgi_app: "WSGIApplication"):
        self.wsgi_app = wsgi_app

    def __call__(
        self, environ: "WSGIEnvironment", start_response: "StartResponse"
    ) -> Iterable[bytes]:
        # Read from the environ: this runs outside Flask's request context.
        bearer = is_bearer(environ.get("HTTP_AUTHORIZATION", ""))

        def start_with_headers(status, headers, exc_info=None):
            _add_security_headers(headers, bearer)
            return start_response(status, headers, exc_info)

        return self.wsgi_app(environ, start_with_headers)


def _vary_on_origin(response: Response) -> Response:
    # With a list of origins, whether a response allows its reader's origin depends on the
    # Origin it was asked with (flask-cors says so only when the list has several): a cache
    # must not hand one origin's answer to another.
    response.vary.add("Origin")
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response of the app, errors included."""
    app.wsgi_app = SecurityHeaders(app.wsgi_app)  # type: ignore[method-assign]
    origins = app.config["CORS_ORIGINS"]
    if not origins:
        return
    any_origin = origins in (["*"], "*")
    if not any_origin:
        app.after_request(_vary_on_origin)
    CORS(
        app,
        resources={r"/api/*": {}},
        origins="*" if any_origin else origins,
        # "*" answers "*", the same to every origin, rather than echoing each one back.
        # Browsers accept it because no request is credentialed: a token travels in the
        # Authorization header, which the preflight allows by name, never in a cookie.
        send_wildcard=any_origin,
        allow_headers=list(CORS_ALLOWED_HEADERS),
        expose_headers=list(CORS_EXPOSED_HEADERS),
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        max_age=600,
    )
