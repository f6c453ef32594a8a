"""The index: what a newcomer finds at `/` and `/api/v1`, links to the docs and the API.

It reads nothing from the database, so it answers while the database is away.
"""

from flask import Blueprint, url_for

from todo.auth import token_mode
from todo.openapi import API_PREFIX, Index, IndexLinks, documented, json_answer, ref

index = Blueprint("index", __name__)


def _links() -> IndexLinks:
    accounts = (
        {"users": url_for("accounts.create_user"), "tokens": url_for("accounts.create_token")}
        if token_mode()
        else {}
    )
    return IndexLinks(
        docs=url_for("docs.page"),
        openapi=url_for("docs.openapi_json"),
        todos=url_for("api.list_todos"),
        health=url_for("api.health"),
        **accounts,
    )


@index.get("/")
def root():
    """List where the API, its documentation and its OpenAPI document are."""
    return Index(links=_links()).model_dump(exclude_none=True)


# With or without the trailing slash: the document's path `/` under the server `/api/v1` reads
# as `/api/v1/`, and a newcomer types `/api/v1`. Neither is redirected.
@index.get(API_PREFIX)
@index.get(f"{API_PREFIX}/")
@documented(
    tag="index",
    auth="none",
    description="The same index answers at `/api/v1` (without the trailing slash) and at the "
    "root `/` of the host, outside the API's prefix. It needs no token and no database.",
    responses={200: json_answer("Links to the documentation and the API.", ref("Index"))},
)
def api_index():
    """List where the API, its documentation and its OpenAPI document are."""
    return Index(links=_links()).model_dump(exclude_none=True)
