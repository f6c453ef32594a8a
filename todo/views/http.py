"""HTTP details shared by the views: JSON bodies, ETags and conditional requests."""

import re

from flask import Response, request
from werkzeug.exceptions import RequestEntityTooLarge, UnsupportedMediaType

from todo.models.todo import MAX_VERSION

# Our tags are "<id>-<version>", quoted in headers; numbers longer than any stored id or
# version cannot match. The OpenAPI document states this pattern.
ETAG_PATTERN = r'^"([0-9]{1,19})-([0-9]{1,10})"$'
_ETAG = re.compile(ETAG_PATTERN)


def json_body() -> bytes:
    """Return the raw request body, which must be declared as UTF-8 JSON."""
    charset = request.mimetype_params.get("charset", "utf-8").lower()
    if not request.is_json or charset not in ("utf-8", "utf8"):
        raise UnsupportedMediaType("Send the request body as JSON: Content-Type: application/json.")
    if request.content_encoding not in (None, "", "identity"):
        raise UnsupportedMediaType("Send the request body without a Content-Encoding.")
    body = request.get_data(cache=False)
    limit = request.max_content_length
    # Werkzeug cuts a body sent without Content-Length (chunked) at the limit without a word;
    # a byte left over means the body was too large, not that it ended there.
    if request.content_length is None and limit is not None and len(body) >= limit:
        if request.input_stream.read(1):
            raise RequestEntityTooLarge()
    return body


def etag_for(todo_id: int, version: int) -> str:
    """Return the strong entity tag (unquoted) of a todo at a version."""
    return f"{todo_id}-{version}"


def requested_versions(todo_id: int) -> set[int] | None:
    """Return the versions If-Match allows, or None when any version will do."""
    if not request.if_match or request.if_match.star_tag:
        return None
    versions = set()
    # Weak tags never match If-Match: RFC 9110 asks for the strong comparison.
    for tag in request.if_match.as_set():
        match = _ETAG.fullmatch(f'"{tag}"')
        if match and int(match[1]) == todo_id and int(match[2]) <= MAX_VERSION:
            versions.add(int(match[2]))
    return versions


def not_modified(etag: str) -> Response | None:
    """Answer 304 when If-None-Match shows the client already holds this version."""
    # RFC 9110 compares If-None-Match weakly, and `*` matches any current version.
    if request.if_none_match and request.if_none_match.contains_weak(etag):
        response = Response(status=304)
        response.set_etag(etag)
        return response
    return None


def json_response(body: bytes, status: int = 200, etag: str | None = None) -> Response:
    """Answer with JSON bytes, tagged when an ETag is given."""
    response = Response(body, status, mimetype="application/json")
    if etag is not None:
        response.set_etag(etag)
    return response
