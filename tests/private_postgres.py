"""A throwaway PostgreSQL server of the tests' own, to stop and start at will."""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.proxy import closed_port


class PrivatePostgres:
    """A fresh cluster in a temporary folder, served on a free loopback port."""

    def __init__(self) -> None:
        # Debian's layout; the newest installed version.
        binaries = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        if not binaries:
            raise FileNotFoundError("PostgreSQL's server programs (pg_ctl) are not installed")
        self.bin = Path(binaries[-1]).parent
        self.folder = Path(tempfile.mkdtemp(prefix="todo-postgres-"))
        self.port = closed_port()
        # PostgreSQL refuses to run as root; CI runs as root, with the postgres user there.
        self._as = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self._as:
            shutil.chown(self.folder, "postgres")
        self._run("initdb", "-D", str(self.folder / "data"), "-A", "trust", "-U", "postgres")

    @property
    def url(self) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, program: str, *arguments: str) -> None:
        subprocess.run(
            [*self._as, str(self.bin / program), *arguments],
            check=True, capture_output=True, timeout=60,
        )  # fmt: skip

    def _ctl(self, *arguments: str) -> None:
        self._run("pg_ctl", "-D", str(self.folder / "data"), "-w", *arguments)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        self._ctl("-o", options, "-l", str(self.folder / "log"), "start")

    def stop(self) -> None:
        """Stop the server the way an administrator would: it ends every connection."""
        self._ctl("-m", "fast", "stop")

    def remove(self) -> None:
        """Stop the server if it runs, and delete its files."""
        subprocess.run(
            [*self._as, str(self.bin / "pg_ctl"), "-D", str(self.folder / "data"), "-m",
             "immediate", "stop"],
            capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        shutil.rmtree(self.folder, ignore_errors=True)
