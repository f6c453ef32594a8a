"""Readers of the project's request examples: `.http` files and curl commands in Markdown."""

import base64
import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
ENDPOINTS_HTTP = ROOT / "endpoints.http"
# Where REST Client finds the environment of endpoints.http: `$shared` is its default.
VSCODE_SETTINGS = ROOT / ".vscode" / "settings.json"


@dataclass
class HttpRequest:
    """One request of a REST Client / httpyac / JetBrains HTTP Client file."""

    title: str
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""
    # `# @name login`: later requests use its answer as {{login.response.body.$.token}}.
    name: str | None = None
    # `# @tag accounts`: httpyac runs the requests of a tag with `--tag`.
    tags: tuple[str, ...] = ()
    # `# @expect 201`: the status the request answers when the file is sent in order.
    expect: int | None = None


@dataclass
class Answer:
    """What a later request may use of an earlier named request's response."""

    headers: Mapping[str, str]
    body: Any


_VARIABLE = re.compile(r"^@([\w-]+)\s*=\s*(.*)$")
_METADATA = re.compile(r"^(?:#|//)\s*@(name|tag|expect)\s+(.+)$")
_FILE_VARIABLE = re.compile(r"\{\{\s*([\w-]+)\s*\}\}")
# REST Client's request variables: {{name.response.body.<JSONPath>}} and
# {{name.response.headers.<Header-Name>}}.
_REQUEST_VARIABLE = re.compile(r"\{\{\s*(\w+)\.response\.(body|headers)\.([^}\s]+)\s*\}\}")
_JSON_PATH_STEP = re.compile(r"\.([^.\[]+)|\[([0-9]+)\]")


def parse_http_file(text: str, environment: Mapping[str, str] | None = None) -> list[HttpRequest]:
    """Read the requests of an .http file: `@name = value` variables, `###` between requests.

    File variables, and the environment's, are replaced wherever they are used; request
    variables, which need the answers of earlier requests, are left for `ready_to_send`.
    """
    variables = dict(environment or {})
    requests = []
    for line in text.splitlines():
        variable = _VARIABLE.match(line.strip())
        if variable:
            variables[variable[1]] = variable[2].strip()
    for block in re.split(r"^###", text, flags=re.MULTILINE)[1:]:
        lines = block.splitlines()
        title = lines[0].strip()
        request: HttpRequest | None = None
        metadata: dict[str, Any] = {"tags": ()}
        in_body = False
        for line in lines[1:]:
            stripped = line.strip()
            if request is None:
                meta = _METADATA.match(stripped)
                if meta and meta[1] == "name":
                    metadata["name"] = meta[2].strip()
                elif meta and meta[1] == "tag":
                    metadata["tags"] += tuple(meta[2].split())
                elif meta:
                    metadata["expect"] = int(meta[2])
                elif _VARIABLE.match(stripped):
                    continue
                elif stripped.startswith(("#", "//")):
                    title = title or stripped.lstrip("#/ ")
                elif stripped:
                    method, url, *_ = stripped.split()
                    request = HttpRequest(title, method.upper(), url, **metadata)
            elif in_body:
                request.body += line + "\n"
            elif not stripped:
                in_body = True
            elif not stripped.startswith(("#", "//")):
                name, value = stripped.split(":", 1)
                request.headers[name.strip()] = value.strip()
        if request is not None:
            requests.append(request)

    def substitute(value: str) -> str:
        # A variable's value may itself use variables.
        while (replaced := _FILE_VARIABLE.sub(lambda m: variables[m[1]], value)) != value:
            value = replaced
        return value

    for request in requests:
        request.url = substitute(request.url)
        request.headers = {name: substitute(value) for name, value in request.headers.items()}
        request.body = substitute(request.body)
    return requests


def default_environment() -> dict[str, str]:
    """Return the variables endpoints.http is sent with when no environment is chosen."""
    settings = json.loads(VSCODE_SETTINGS.read_text())
    return settings["rest-client.environmentVariables"]["$shared"]


def endpoints_http() -> list[HttpRequest]:
    """Return the requests of endpoints.http, in its default environment."""
    return parse_http_file(ENDPOINTS_HTTP.read_text(), default_environment())


def path_template(path: str, templates: Iterable[str]) -> str | None:
    """Return the OpenAPI path template that a concrete API path falls under."""
    for template in templates:
        pattern = re.sub(r"\\\{[^}]+\\\}", "[^/]+", re.escape(template))
        if re.fullmatch(pattern, path):
            return template
    return None


def _json_path(body: Any, path: str) -> Any:
    if not path.startswith("$"):
        raise ValueError(f"not a JSONPath: {path}")
    value = body
    for name, index in _JSON_PATH_STEP.findall(path[1:]):
        value = value[int(index)] if index else value[name]
    return value


def ready_to_send(request: HttpRequest, answers: Mapping[str, Answer]) -> HttpRequest:
    """Return the request as the clients send it: earlier answers put in, Basic encoded.

    Both REST Client and httpyac encode `Authorization: Basic user:password` themselves.
    """

    def answered(match: re.Match) -> str:
        answer = answers[match[1]]
        if match[2] == "headers":
            return answer.headers[match[3]]
        return str(_json_path(answer.body, match[3]))

    def fill(value: str) -> str:
        return _REQUEST_VARIABLE.sub(answered, value)

    headers = {name: fill(value) for name, value in request.headers.items()}
    scheme, _, credentials = headers.get("Authorization", "").partition(" ")
    if scheme == "Basic" and ":" in credentials:
        headers["Authorization"] = f"Basic {base64.b64encode(credentials.encode()).decode()}"
    return replace(request, url=fill(request.url), headers=headers, body=fill(request.body))


_CURL = re.compile(r"\bcurl\s(?:[^\n`]*\\\n)*[^\n`]*")
_LOCAL_URL = re.compile(r"^(?:https?://)?(?:localhost|127\.0\.0\.1)(?::\d+)?/")


def curl_requests(text: str) -> list[tuple[str, str]]:
    """Return (method, URL) of every curl command in a Markdown text, in code or inline."""
    found = []
    for command in _CURL.findall(text):
        words = shlex.split(command.replace("\\\n", " "), comments=True)
        method = None
        for flag, value in zip(words, words[1:], strict=False):
            if flag in ("-X", "--request"):
                method = value.upper()
        if method is None:
            sends_data = any(word.startswith(("-d", "--data", "--json")) for word in words)
            method = "POST" if sends_data else "GET"
        urls = [word for word in words if _LOCAL_URL.match(word)]
        if urls:
            url = urls[0] if "://" in urls[0] else "http://" + urls[0]
            found.append((method, url))
    return found


@dataclass
class ShellStep:
    """One command of a Markdown ```sh block, with what the text around it says of it."""

    command: str  # its lines joined, without its trailing comment
    heading: str = ""  # the comment above it, shared by the commands under it
    note: str = ""  # its trailing `# comment`
    output: str = ""  # `# {...}` lines right after it: what it answers


_SHELL_BLOCK = re.compile(r"^```sh\n(.*?)^```", re.MULTILINE | re.DOTALL)


def _split_comment(line: str) -> tuple[str, str]:
    """Split a shell line into the command and its trailing comment, quotes respected."""
    quote = None
    for index, char in enumerate(line):
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (index == 0 or line[index - 1].isspace()):
            return line[:index].rstrip(), line[index + 1 :].strip()
    return line.rstrip(), ""


def shell_blocks(text: str) -> list[list[ShellStep]]:
    """Return the commands of every ```sh block of a Markdown text, block by block."""
    blocks = []
    for source in _SHELL_BLOCK.findall(text):
        steps: list[ShellStep] = []
        heading, after_comment, in_output, pending = "", False, False, ""
        for line in source.splitlines():
            stripped = line.strip()
            if pending or (stripped and not stripped.startswith("#")):
                command, note = _split_comment(stripped)
                if command.endswith("\\"):
                    pending += command[:-1].strip() + " "
                    continue
                steps.append(ShellStep(pending + command, heading, note))
                pending, after_comment, in_output = "", False, True
            elif stripped.startswith("#"):
                comment = stripped[1:].strip()
                if in_output and steps and (comment[:1] in "{[" or steps[-1].output):
                    if comment[:1] in "{[" or stripped.startswith("#  "):
                        steps[-1].output += comment
                        continue
                heading = f"{heading} {comment}" if after_comment else comment
                after_comment, in_output = True, False
            else:
                after_comment, in_output = False, False
        blocks.append(steps)
    return blocks
