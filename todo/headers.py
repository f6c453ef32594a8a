"""Headers that every response carries, whatever answered it."""

from flask import Flask, Response


def _add_security_headers(response: Response) -> Response:
    # Browsers must take a response for the type it says it is: a JSON body is never run as
    # a script or shown as a page, whatever a client managed to put in it.
    response.headers["X-Content-Type-Options"] = "nosniff"
    return response


def init_app(app: Flask) -> None:
    """Add the headers to every response of the app, errors included."""
    app.after_request(_add_security_headers)
