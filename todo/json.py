"""Flask's JSON provider, backed by orjson: strict on input, fast on output."""

from typing import Any

import orjson
from flask import Response
from flask.json.provider import JSONProvider


class OrjsonProvider(JSONProvider):
    """Encode and decode JSON with orjson."""

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        return orjson.dumps(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        return Response(
            orjson.dumps(self._prepare_response_obj(args, kwargs)), mimetype="application/json"
        )
