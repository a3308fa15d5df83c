"""A throwaway PostgreSQL 15 cluster on loopback, started and stopped by PID (as user postgres when root)."""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import signal
import subprocess
import time
from pathlib import Path

from procs import free_port
from support import require_binary

PG_BIN = Path("/usr/lib/postgresql/15/bin")


class PgCluster:
    """initdb + postgres in a temp dir; `url(db)` gives a connection URL for a fresh database."""

    def __init__(self, base: Path) -> None:
        require_binary(str(PG_BIN / "postgres"))
        import psycopg  # noqa: F401 - fail early with a clear import error

        self.base = base
        self.data = base / "pgdata"
        self.sock = base / "sock"
        self.port = free_port()
        self.user = "postgres" if os.geteuid() == 0 else None
        self.proc: subprocess.Popen | None = None
        self._names = itertools.count(1)
        self.sock.mkdir(parents=True, exist_ok=True)
        if self.user:
            entry = pwd.getpwnam(self.user)
            for path in (base, self.sock):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [
                str(PG_BIN / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "flakedrop",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            check=True,
            capture_output=True,
            user=self.user,
            timeout=120,
        )
        self.start()

    def start(self) -> None:
        """Start the postmaster on 127.0.0.1 and wait until it accepts connections."""
        log = open(self.base / "postgres.log", "ab")  # noqa: SIM115 - kept open for the child
        self.proc = subprocess.Popen(
            [
                str(PG_BIN / "postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-k",
                str(self.sock),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "max_connections=100",
                "-c",
                "fsync=on",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            user=self.user,
        )
        log.close()
        self.wait_ready()

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Poll until a connection succeeds."""
        import psycopg

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                psycopg.connect(self.url("postgres"), connect_timeout=1).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError("PostgreSQL did not start: " + (self.base / "postgres.log").read_text()[-2000:])

    def url(self, db: str) -> str:
        """Return a URL for database db on this cluster."""
        return f"postgresql://flakedrop@127.0.0.1:{self.port}/{db}"

    def new_database(self) -> str:
        """Create a fresh database and return its URL."""
        import psycopg

        name = f"t{next(self._names)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return self.url(name)

    def stop(self, mode: int = signal.SIGINT) -> None:
        """Stop the postmaster by its PID (SIGINT: fast shutdown) and wait for it."""
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, mode)
            self.proc.wait(timeout=60)
        self.proc = None

    def destroy(self) -> None:
        """Stop and remove the cluster."""
        self.stop()
        shutil.rmtree(self.base, ignore_errors=True)
