"""nginx in front of the server, configured exactly as docs/deployment.md documents it."""

import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.server import (
    CONNECTION_ERRORS,
    HOST,
    START_TIMEOUT,
    STOP_TIMEOUT,
    Client,
    _stop_when_the_tests_die,
    free_port,
)

DEPLOYMENT = Path(__file__).parent.parent / "docs" / "deployment.md"
DOCUMENTED_UPSTREAM = "server 127.0.0.1:8000;"
DOCUMENTED_LISTEN = "listen 80;"


def documented_configuration() -> str:
    """Return the nginx configuration that docs/deployment.md shows."""
    found = re.search(r"```nginx\n(.*?)```", DEPLOYMENT.read_text(), re.S)
    if found is None:
        raise LookupError("docs/deployment.md has no nginx configuration")
    return found[1]


def nginx_binary() -> str | None:
    """Return the nginx program, if installed."""
    return shutil.which("nginx") or next(
        (path for path in ("/usr/sbin/nginx", "/usr/local/sbin/nginx") if os.path.exists(path)),
        None,
    )


class Nginx:
    """nginx with the documented configuration, on a free loopback port, before `upstream`."""

    def __init__(self, binary: str, upstream_port: int):
        self.binary = binary
        self.upstream_port = upstream_port
        self.port = 0
        self.folder = tempfile.TemporaryDirectory()
        self.process: subprocess.Popen | None = None

    def configuration(self) -> str:
        """Return the whole configuration: the documented part, pointed at this test's ports."""
        server = documented_configuration()
        for documented, actual in (
            (DOCUMENTED_UPSTREAM, f"server {HOST}:{self.upstream_port};"),
            (DOCUMENTED_LISTEN, f"listen {HOST}:{self.port};"),
        ):
            if documented not in server:
                raise LookupError(f"the documented configuration has no `{documented}`")
            server = server.replace(documented, actual)
        folder = self.folder.name
        temporary = "\n".join(
            f"{kind}_temp_path {folder}/{kind};"
            for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        # As root, nginx would run its workers as `nobody`, who cannot use this folder.
        user = "user root;" if os.geteuid() == 0 else ""
        return (
            f"daemon off;\nworker_processes 1;\npid {folder}/nginx.pid;\n"
            f"error_log {folder}/error.log;\n{user}\n"
            "events { worker_connections 1024; }\n"
            f"http {{\naccess_log off;\n{temporary}\n{server}\n}}\n"
        )

    def start(self) -> "Nginx":
        """Start nginx and wait until it passes a health check through to the server."""
        self.port = free_port()
        path = Path(self.folder.name) / "nginx.conf"
        path.write_text(self.configuration())
        self.process = subprocess.Popen(
            [self.binary, "-p", self.folder.name, "-c", str(path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
            preexec_fn=_stop_when_the_tests_die,
        )
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}:\n{self.log()}")
            try:
                with Client(self.port, timeout=1) as client:
                    if client.request("GET", "/api/v1/health").status == 200:
                        return self
            except CONNECTION_ERRORS:
                pass
            # Not a timing assumption: only a pause between polls of a bounded wait.
            time.sleep(0.05)
        raise TimeoutError(f"nginx did not pass requests on within {START_TIMEOUT} s")

    def log(self) -> str:
        """Return nginx's error log."""
        path = Path(self.folder.name) / "error.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop nginx at once and drop its folder."""
        if self.process is not None and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(STOP_TIMEOUT)
        self.folder.cleanup()
