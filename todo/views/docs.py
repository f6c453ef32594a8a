"""The API describing itself: its OpenAPI document and a Swagger UI page that needs no internet."""

import secrets
from importlib.resources import files

import orjson
from flask import Blueprint, Response, current_app, render_template_string, send_from_directory

from todo.openapi import openapi_document

docs = Blueprint("docs", __name__)

# Swagger UI's own build, as installed with flask-swagger-ui: nothing is fetched from a CDN.
SWAGGER_UI_DIST = files("flask_swagger_ui") / "dist"

_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>{{ title }}</title>
  <link rel="stylesheet" href="{{ url_for('docs.asset', filename='swagger-ui.css') }}">
  <link rel="icon" type="image/png" sizes="32x32"
        href="{{ url_for('docs.asset', filename='favicon-32x32.png') }}">
  <style nonce="{{ nonce }}">body { margin: 0; background: #fafafa; }</style>
</head>
<body>
  <noscript>This page needs JavaScript; the raw document is at
    <a href="{{ url_for('docs.openapi_json') }}">{{ url_for('docs.openapi_json') }}</a>.</noscript>
  <div id="swagger-ui"></div>
  <script src="{{ url_for('docs.asset', filename='swagger-ui-bundle.js') }}"></script>
  <script nonce="{{ nonce }}">
    window.ui = SwaggerUIBundle({
      url: {{ url_for('docs.openapi_json') | tojson }},
      dom_id: "#swagger-ui",
      deepLinking: true,
      docExpansion: "list",
      // The default asks validator.swagger.io to rate the document: no calls out.
      validatorUrl: null,
      presets: [SwaggerUIBundle.presets.apis],
      layout: "BaseLayout"
    });
  </script>
</body>
</html>
"""


@docs.get("/openapi.json")
def openapi_json():
    """Describe the API as an OpenAPI 3.1 document."""
    return Response(orjson.dumps(openapi_document(current_app)), mimetype="application/json")


# The page runs only its own files and the one inline script and style that carry this
# request's nonce, talks only to the service, and may not be framed by another site.
_CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'nonce-{nonce}'; "
    "img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; "
    "frame-ancestors 'none'"
)


@docs.get("/docs")
def page():
    """Show the API's interactive documentation."""
    title = openapi_document(current_app)["info"]["title"]
    nonce = secrets.token_urlsafe(16)
    response = Response(
        render_template_string(_PAGE, title=title, nonce=nonce), mimetype="text/html"
    )
    response.headers["Content-Security-Policy"] = _CONTENT_SECURITY_POLICY.format(nonce=nonce)
    # For browsers that predate frame-ancestors.
    response.headers["X-Frame-Options"] = "DENY"
    return response


@docs.get("/docs/<path:filename>")
def asset(filename: str):
    """Serve a file of Swagger UI's build."""
    return send_from_directory(str(SWAGGER_UI_DIST), filename)
