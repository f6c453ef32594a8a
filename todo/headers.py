"""Headers that responses carry whatever answered them: security, caching, and CORS."""

from flask import Flask, Response
from flask_cors import CORS

from todo.auth import bearer_token

# What a browser app on an allowed origin may send and read (CORS_ORIGINS).
CORS_ALLOWED_HEADERS = (
    "Authorization",
    "Content-Type",
    "If-Match",
    "If-None-Match",
    "Idempotency-Key",
)
CORS_EXPOSED_HEADERS = ("ETag", "Location", "Link", "Retry-After", "Idempotent-Replayed")


def _add_security_headers(response: Response) -> Response:
    # Browsers must take a response for the type it says it is: a JSON body is never run as
    # a script or shown as a page, whatever a client managed to put in it.
    response.headers["X-Content-Type-Options"] = "nosniff"
    # An answer to a bearer request is that user's alone, error or not: no shared cache may
    # keep it, and a private one must not hand it to a request with another token.
    if bearer_token() is not None:
        headers = response.headers
        headers["Cache-Control"] = "private"
        # Set as text: Werkzeug's parsed `response.vary` costs more than the rest of this.
        vary = headers.get("Vary")
        headers["Vary"] = f"{vary}, Authorization" if vary else "Authorization"
    return response


def _vary_on_origin(response: Response) -> Response:
    # With a list of origins, whether a response allows its reader's origin depends on the
    # Origin it was asked with (flask-cors says so only when the list has several): a cache
    # must not hand one origin's answer to another.
    response.vary.add("Origin")
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response of the app, errors included."""
    app.after_request(_add_security_headers)
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
