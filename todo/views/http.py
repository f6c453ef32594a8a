"""HTTP details shared by the views: JSON bodies, ETags and conditional requests."""

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache, lru_cache

from flask import Response, request
from werkzeug.exceptions import BadRequest, LengthRequired, UnsupportedMediaType
from werkzeug.exceptions import NotImplemented as NotImplementedHere
from werkzeug.http import parse_options_header

from todo.errors import InvalidInput
from todo.models.todo import MAX_VERSION
from todo.store import Preconditions, StoredTodo

# Our tags are "<id>-<version>", quoted in headers, without leading zeros; numbers longer than
# any stored id or version cannot match. The OpenAPI document states this pattern.
ETAG_PATTERN = r'^"([1-9][0-9]{0,18})-([1-9][0-9]{0,9})"$'
_ETAG = re.compile(ETAG_PATTERN)

# If-Match and If-None-Match (RFC 9110 §13.1.1-2): `*`, or a comma-separated list of entity
# tags (§8.8.3: an optional W/, then any visible characters but `"` between quotes) with
# optional whitespace. Empty list elements are ignored, as §5.6.1.2 asks of recipients, but
# at least one tag must be named. Separators and tags never share a character, so matching
# takes time linear in the header, also when it fails. The OpenAPI document states this
# pattern; JSON Schema reads it as JavaScript does.
_ENTITY_TAG = r'(?:W/)?"[\x21\x23-\x7e\x80-\xff]*"'
ENTITY_TAGS_PATTERN = (
    rf"^(?:[ \t]*\*[ \t]*|[ \t,]*{_ENTITY_TAG}(?:[ \t]*,[ \t,]*{_ENTITY_TAG})*[ \t,]*)$"
)
_ENTITY_TAGS = re.compile(ENTITY_TAGS_PATTERN)
# In a header that matched the pattern, every quoted string is a tag.
_TAG = re.compile(r'(W/)?"([^"]*)"')

# HTTP-date (RFC 9110 §5.6.7): IMF-fixdate and the two obsolete forms, all in GMT.
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_MONTH = "|".join(_MONTHS)
_DAY = "Mon|Tue|Wed|Thu|Fri|Sat|Sun"
_LONG_DAY = "Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday"
_TIME = "([0-9]{2}):([0-9]{2}):([0-9]{2})"
_IMF_FIXDATE = re.compile(rf"(?:{_DAY}), ([0-9]{{2}}) ({_MONTH}) ([0-9]{{4}}) {_TIME} GMT")
_RFC850_DATE = re.compile(rf"(?:{_LONG_DAY}), ([0-9]{{2}})-({_MONTH})-([0-9]{{2}}) {_TIME} GMT")
_ASCTIME_DATE = re.compile(rf"(?:{_DAY}) ({_MONTH}) ([0-9]{{2}}| [0-9]) {_TIME} ([0-9]{{4}})")
_NO_PRECONDITIONS = Preconditions()


def json_body() -> bytes:
    """Return the raw request body, which must be declared as UTF-8 JSON."""
    if not _is_utf8_json(header("Content-Type") or ""):
        raise UnsupportedMediaType("Send the request body as JSON: Content-Type: application/json.")
    if header("Content-Encoding") not in (None, "", "identity"):
        raise UnsupportedMediaType("Send the request body without a Content-Encoding.")
    transfer_coding = header("Transfer-Encoding")
    if transfer_coding is not None:
        _refuse_transfer_coding(transfer_coding)
    body = request.get_data(cache=False)
    # A server hands over what arrived, also from a client that gave up half-way: only
    # Content-Length tells a whole body from the start of one.
    expected = request.content_length or 0
    if len(body) < expected:
        raise BadRequest(
            f"The request body ended after {len(body)} of the {expected} bytes"
            " that its Content-Length announced."
        )
    return body


@lru_cache(maxsize=64)
def _is_utf8_json(content_type: str) -> bool:
    # Werkzeug's Request.is_json and mimetype_params, from the one header: clients send a
    # handful of distinct values, each parsed once.
    mimetype, options = parse_options_header(content_type)
    mimetype = mimetype.lower()
    json = mimetype == "application/json" or (
        mimetype.startswith("application/") and mimetype.endswith("+json")
    )
    return json and options.get("charset", "utf-8").lower() in ("utf-8", "utf8")


def header(name: str) -> str | None:
    """Return a request header, None when absent.

    Read from the WSGI environ, where Werkzeug's request.headers reads it, without the cost
    of its lookup, which raises and catches an exception for every absent header: most of
    the conditional headers a request could carry (bench/README.md, issue 13).
    """
    return request.environ.get(_environ_key(name))


@cache
def _environ_key(name: str) -> str:
    key = name.upper().replace("-", "_")
    return key if key in ("CONTENT_TYPE", "CONTENT_LENGTH") else f"HTTP_{key}"


def _refuse_transfer_coding(value: str) -> None:
    # A server may swallow a broken chunked framing and pass on the part before it, which can
    # be a whole JSON document (granian does): a body's end is trusted only from its length.
    codings = [coding.strip().lower() for coding in value.split(",")]
    unknown = [coding for coding in codings if coding != "chunked"]
    if unknown:
        raise NotImplementedHere(f"The transfer coding {unknown[0]!r} is not supported.")
    raise LengthRequired("Send the request body with a Content-Length, not chunked.")


def etag_for(todo_id: int, version: int) -> str:
    """Return the strong entity tag (unquoted) of a todo at a version."""
    return f"{todo_id}-{version}"


@dataclass(frozen=True)
class EntityTags:
    """An If-Match or If-None-Match header: `*`, or the opaque tags it names, strong and weak."""

    star: bool
    strong: frozenset[str] = frozenset()
    weak: frozenset[str] = frozenset()

    def versions(self, todo_id: int, *, weak: bool) -> frozenset[int]:
        """Return the versions of this todo that the tags name, weak ones too if `weak`."""
        versions = set()
        for tag in self.strong | self.weak if weak else self.strong:
            match = _ETAG.fullmatch(f'"{tag}"')
            if match and int(match[1]) == todo_id and int(match[2]) <= MAX_VERSION:
                versions.add(int(match[2]))
        return frozenset(versions)


def entity_tags(name: str) -> EntityTags | None:
    """Read If-Match or If-None-Match: None when absent; a 400 when malformed."""
    return _read_entity_tags(name, header(name))


def _read_entity_tags(header: str, value: str | None) -> EntityTags | None:
    if value is None:
        return None
    if not _ENTITY_TAGS.fullmatch(value):
        message = 'must be * or a comma-separated list of quoted entity tags, such as "1-1"'
        raise InvalidInput(
            f"The {header} header {message}.", [{"field": header, "message": message}]
        )
    if value.strip(" \t") == "*":
        return EntityTags(star=True)
    tags = _TAG.findall(value)
    return EntityTags(
        star=False,
        strong=frozenset(tag for weak, tag in tags if not weak),
        weak=frozenset(tag for weak, tag in tags if weak),
    )


def http_date(value: str) -> datetime | None:
    """Read an HTTP-date as naive UTC; None when the value is not one."""
    value = value.strip(" \t")
    if match := _IMF_FIXDATE.fullmatch(value):
        day, month, year, hour, minute, second = match.groups()
    elif match := _RFC850_DATE.fullmatch(value):
        day, month, short_year, hour, minute, second = match.groups()
        # §5.6.7: a two-digit year more than 50 years ahead is the latest such year past.
        this_year = datetime.now(UTC).year
        year = str(this_year - this_year % 100 + int(short_year))
        if int(year) > this_year + 50:
            year = str(int(year) - 100)
    elif match := _ASCTIME_DATE.fullmatch(value):
        month, day, hour, minute, second, year = match.groups()
    else:
        return None
    if int(second) > 60:
        return None
    try:
        # A leap second (60) counts as the last second of its minute: no change falls inside it.
        return datetime(
            int(year),
            _MONTHS.index(month) + 1,
            int(day),
            int(hour),
            int(minute),
            min(int(second), 59),
        )
    except ValueError:
        return None


def preconditions(todo_id: int) -> Preconditions:
    """Read the preconditions of a write: If-Match, If-None-Match and If-Unmodified-Since."""
    match_value = header("If-Match")
    none_match_value = header("If-None-Match")
    since = header("If-Unmodified-Since")
    if match_value is None and none_match_value is None and since is None:
        return _NO_PRECONDITIONS
    if_match = _read_entity_tags("If-Match", match_value)
    if_none_match = _read_entity_tags("If-None-Match", none_match_value) or EntityTags(star=False)
    return Preconditions(
        # `*` matches any version; weak tags never match: If-Match compares strongly.
        match=None if if_match is None or if_match.star else if_match.versions(todo_id, weak=False),
        # If-None-Match compares weakly.
        none_match=if_none_match.versions(todo_id, weak=True),
        none_match_any=if_none_match.star,
        # RFC 9110 §13.1.4: ignored with If-Match, and when it is not a valid HTTP-date.
        unmodified_since=http_date(since) if if_match is None and since is not None else None,
    )


def not_modified(cached: EntityTags | None, todo: StoredTodo) -> Response | None:
    """Answer 304 when If-None-Match shows the client already holds this version."""
    # RFC 9110 compares If-None-Match weakly, and `*` matches any current version.
    if cached is None:
        return None
    if cached.star or todo.version in cached.versions(todo.id, weak=True):
        response = Response(status=304)
        response.set_etag(etag_for(todo.id, todo.version))
        return response
    return None


def json_response(body: bytes, status: int = 200, etag: str | None = None) -> Response:
    """Answer with JSON bytes, tagged when an ETag is given."""
    response = Response(body, status, mimetype="application/json")
    if etag is not None:
        response.set_etag(etag)
    return response
