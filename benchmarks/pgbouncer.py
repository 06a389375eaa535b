"""A private PgBouncer in transaction mode, for the fleet benchmark and the
pooled-path test: found (or installed with apt-get when run as root), its
config written in a temp dir, started on a free port, stopped.

    with PgBouncer(upstream_host, upstream_port, roles, pool_size=5) as bouncer:
        url = bouncer.url(role, dbname)

Authentication is ``trust`` towards the clients (the roles listed in the
auth_file): for a local test server only. PostgreSQL itself decides what the
pooled server connections may do.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import BinaryIO

import psycopg
from psycopg.conninfo import make_conninfo

SEARCH = ("/usr/sbin", "/usr/local/sbin", "/usr/bin", "/usr/local/bin")
NEEDS = (
    "PgBouncer is needed (Debian/Ubuntu: apt-get install pgbouncer; bin/test installs it "
    "when run as root)"
)


class PgBouncerMissing(RuntimeError):
    """No pgbouncer binary, and none could be installed."""


def find_pgbouncer(*, install: bool = False) -> str:
    """The pgbouncer binary; with ``install``, apt-get it when missing and root."""
    found = shutil.which("pgbouncer") or next(
        (str(Path(d) / "pgbouncer") for d in SEARCH if (Path(d) / "pgbouncer").is_file()), None
    )
    if found:
        return found
    if install and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "pgbouncer"],
            env=env,
            capture_output=True,
            check=False,
        )
        return find_pgbouncer(install=False)
    raise PgBouncerMissing(NEEDS)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgBouncer:
    """One pgbouncer process in transaction mode in front of ``host:port``."""

    def __init__(
        self,
        host: str,
        port: int,
        roles: list[str],
        *,
        pool_size: int,
        max_client_conn: int = 500,
        install: bool = False,
    ) -> None:
        self.binary = find_pgbouncer(install=install)
        self.upstream = (host, port)
        self.roles = roles
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.port = free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="acode-pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.stderr: BinaryIO | None = None

    def config(self) -> str:
        host, port = self.upstream
        return "\n".join(
            [
                "[databases]",
                f"* = host={host} port={port}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {self.dir / 'userlist.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                "min_pool_size = 0",
                "reserve_pool_size = 0",
                f"max_client_conn = {self.max_client_conn}",
                # Clients wait for a server connection rather than fail.
                "query_wait_timeout = 60",
                "server_reset_query =",
                "log_connections = 0",
                "log_disconnections = 0",
                "ignore_startup_parameters = extra_float_digits,options",
                f"logfile = {self.dir / 'pgbouncer.log'}",
                f"pidfile = {self.dir / 'pgbouncer.pid'}",
                "",
            ]
        )

    def url(self, role: str, dbname: str) -> str:
        return make_conninfo(host="127.0.0.1", port=self.port, user=role, dbname=dbname)

    def start(self) -> None:
        (self.dir / "userlist.txt").write_text(
            "".join(f'"{role}" ""\n' for role in self.roles), encoding="utf-8"
        )
        ini = self.dir / "pgbouncer.ini"
        ini.write_text(self.config(), encoding="utf-8")
        command = [self.binary, str(ini)]
        if os.geteuid() == 0:  # pgbouncer refuses to run as root
            import pwd

            user = pwd.getpwnam("postgres")
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, user.pw_uid, user.pw_gid)
            command[1:1] = ["-u", "postgres"]
        # Its log goes to stderr too: into a file, never a pipe nobody reads
        # (a full pipe blocks pgbouncer, and with it every client).
        self.stderr = (self.dir / "stderr.log").open("wb")
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=self.stderr)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = (self.dir / "stderr.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"pgbouncer exited: {err.strip() or self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on port {self.port}: {self.log()}")

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None
        self.process = None
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def check(url: str) -> None:
    """One statement through the pooler (raises what psycopg raises)."""
    with psycopg.connect(url, prepare_threshold=None, connect_timeout=5) as conn:
        conn.execute("SELECT 1").fetchone()
