"""Readers of the project's request examples: `.http` files and curl commands in Markdown."""

import re
import shlex
from dataclasses import dataclass, field


@dataclass
class HttpRequest:
    """One request of a REST Client / JetBrains HTTP Client file."""

    title: str
    method: str
    url: str
    headers: dict[str, str] = field(default_factory=dict)
    body: str = ""


def parse_http_file(text: str) -> list[HttpRequest]:
    """Read the requests of an .http file: `@name = value` variables, `###` between requests."""
    variables: dict[str, str] = {}
    requests = []
    for block in re.split(r"^###", text, flags=re.MULTILINE)[1:]:
        lines = block.splitlines()
        title = lines[0].strip()
        request: HttpRequest | None = None
        in_body = False
        for line in lines[1:]:
            stripped = line.strip()
            if request is None:
                if stripped.startswith("@") and "=" in stripped:
                    name, value = stripped[1:].split("=", 1)
                    variables[name.strip()] = value.strip()
                elif stripped.startswith(("#", "//")):
                    title = title or stripped.lstrip("#/ ")
                elif stripped:
                    method, url, *_ = stripped.split()
                    request = HttpRequest(title, method.upper(), url)
            elif in_body:
                request.body += line + "\n"
            elif not stripped:
                in_body = True
            elif not stripped.startswith(("#", "//")):
                name, value = stripped.split(":", 1)
                request.headers[name.strip()] = value.strip()
        if request is not None:
            requests.append(request)
    # Variables may be declared before the first ### too.
    for line in text.split("###", 1)[0].splitlines():
        if line.strip().startswith("@") and "=" in line:
            name, value = line.strip()[1:].split("=", 1)
            variables[name.strip()] = value.strip()
    for request in requests:
        request.url = re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: variables[m[1]], request.url)
    return requests


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
