"""The private PostgreSQL of ``acode-sync dev-server``: for trying it out and for tests.

One cluster per directory DIR: ``DIR/data`` (the cluster), ``DIR/postgres.log``,
the unix socket in DIR (left out if DIR's path is too long for one),
``DIR/dev-server.json`` (the port, reused on the next start, and the auth method)
and ``DIR/.lock`` (serializes concurrent calls). The server listens only on
127.0.0.1. Without a password every login is ``trust``; with one (it counts when
the cluster is created), TCP logins use ``scram-sha-256`` and the superuser
``postgres`` has it. PostgreSQL refuses to run as root, so as root the tools run
as the ``postgres`` OS user, which owns DIR and must be able to reach it: hence
the default DIR (:func:`default_dir`) is ``/tmp/acode-sync-dev-server-0`` for
root, ``~/.cache/acode-sync/dev-server`` for everyone else, or ``$ACODE_DEV_SERVER_DIR``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

from acode_sync.errors import UsageError

DIR_ENV = "ACODE_DEV_SERVER_DIR"
SERVER_USER = "postgres"
BIN_GLOB_ROOT = Path("/usr/lib/postgresql")
START_TIMEOUT = 60
_STATE = "dev-server.json"
_CONF = "acode_dev.conf"
_SOCKET_PATH_MAX = 107 - len("/.s.PGSQL.65535.lock")


def default_dir() -> Path:
    """``$ACODE_DEV_SERVER_DIR``, else a directory the server's OS user can own."""
    chosen = os.environ.get(DIR_ENV)
    if chosen:
        return Path(chosen).expanduser().absolute()
    if os.geteuid() == 0:  # /root is private: the postgres user could not reach it
        return Path(f"/tmp/acode-sync-dev-server-{os.geteuid()}")
    return Path.home() / ".cache" / "acode-sync" / "dev-server"


def find_bin_dir() -> Path:
    """Where initdb and pg_ctl live: PATH first, then the newest /usr/lib/postgresql/*/bin."""
    found = shutil.which("pg_ctl")
    versions = [p for p in BIN_GLOB_ROOT.glob("*/bin") if p.parent.name.isdigit()]
    versions.sort(key=lambda p: int(p.parent.name), reverse=True)
    candidates = ([Path(found).resolve().parent] if found else []) + versions
    for candidate in candidates:
        if all(os.access(candidate / tool, os.X_OK) for tool in ("initdb", "pg_ctl")):
            return candidate
    raise UsageError(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH nor in "
        f"{BIN_GLOB_ROOT}/*/bin: install the PostgreSQL server package"
    )


def _as_root() -> bool:
    return os.geteuid() == 0


def _server_ids() -> tuple[int, int]:
    try:
        entry = pwd.getpwnam(SERVER_USER)
    except KeyError:
        raise UsageError(
            f"PostgreSQL refuses to run as root and there is no '{SERVER_USER}' OS user "
            "to run it as: create one, or run acode-sync as a normal user"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _run(args: list[str], directory: Path, timeout: float) -> tuple[int, str]:
    """Run a tool (as the postgres OS user when root) in its own process group: code, output."""
    cmd = ["runuser", "-u", SERVER_USER, "--", *args] if _as_root() else args
    with subprocess.Popen(
        cmd,
        cwd=directory,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    ) as proc:
        try:
            output, _ = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # a grandchild may hold the pipe open
            proc.communicate()
            raise UsageError(f"{Path(args[0]).name} timed out after {timeout:.0f} s") from None
    return proc.returncode, output


def _chown(path: Path) -> None:
    if _as_root():
        os.chown(path, *_server_ids())


def _prepare(directory: Path) -> None:
    """Create DIR (owned by the server's user) or check that an existing one is ours."""
    if directory.is_symlink():
        raise UsageError(f"{directory}: is a symbolic link; choose another --dir")
    if directory.exists():
        ours = any((directory / name).exists() for name in ("data", _STATE, ".lock"))
        if not directory.is_dir() or not (ours or not any(directory.iterdir())):
            raise UsageError(f"{directory}: not empty and not a dev-server directory")
        owners = {os.geteuid(), _server_ids()[0] if _as_root() else os.geteuid()}
        if directory.stat().st_uid not in owners:
            raise UsageError(f"{directory}: owned by another user; choose another --dir")
    else:
        directory.mkdir(parents=True, mode=0o755, exist_ok=True)
    _chown(directory)
    if _as_root() and _run(["test", "-w", str(directory)], directory, timeout=30)[0] != 0:
        raise UsageError(
            f"{directory}: the {SERVER_USER} OS user cannot write here; make every "
            "parent directory traversable (chmod o+x) or choose a --dir under /tmp"
        )


@contextlib.contextmanager
def _locked(directory: Path) -> Iterator[None]:
    with (directory / ".lock").open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


def _state(directory: Path) -> dict[str, object]:
    try:
        loaded = json.loads((directory / _STATE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def _save_state(directory: Path, state: dict[str, object]) -> None:
    (directory / _STATE).write_text(json.dumps(state) + "\n", encoding="utf-8")


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as postgres does
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _tail(text: str, lines: int = 15) -> str:
    return "\n".join(text.strip().splitlines()[-lines:]) or "(no output)"


def _url(port: int) -> str:
    return f"postgresql://postgres@127.0.0.1:{port}/postgres"


def _initdb(bin_dir: Path, directory: Path, password: str | None) -> None:
    data = directory / "data"
    args = [str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8"]
    args += ["--locale=C", "--no-sync", "--auth-local=trust"]
    pwfile = directory / ".pwfile"
    if password is None:
        args.append("--auth-host=trust")
    else:
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as secret:
            secret.write(password + "\n")
        _chown(pwfile)
        args += ["--auth-host=scram-sha-256", f"--pwfile={pwfile}"]
    try:
        code, output = _run(args, directory, timeout=120)
    finally:
        pwfile.unlink(missing_ok=True)
    if code != 0:
        shutil.rmtree(data, ignore_errors=True)
        raise UsageError(f"initdb failed in {data}:\n{_tail(output)}")
    with (data / "postgresql.conf").open("a", encoding="utf-8") as conf:
        conf.write(f"\n# acode-sync dev-server settings\ninclude_if_exists = '{_CONF}'\n")


def _running_port(bin_dir: Path, directory: Path) -> int | None:
    data = directory / "data"
    if not (data / "PG_VERSION").exists():
        return None
    code, _ = _run([str(bin_dir / "pg_ctl"), "status", "-D", str(data)], directory, timeout=30)
    if code != 0:
        return None
    try:
        lines = (data / "postmaster.pid").read_text(encoding="utf-8").splitlines()
        return int(lines[3])
    except (OSError, IndexError, ValueError):
        return None


def start(directory: Path, port: int | None = None, password: str | None = None) -> str:
    """Start (creating it if needed) the cluster in DIR; the admin URL, without password."""
    directory = Path(directory).absolute()
    bin_dir = find_bin_dir()
    _prepare(directory)
    with _locked(directory):
        running = _running_port(bin_dir, directory)
        if running is not None:
            return _url(running)
        if port is not None and not _port_free(port):
            raise UsageError(f"port {port} on 127.0.0.1 is already in use")
        data, state = directory / "data", _state(directory)
        if not (data / "PG_VERSION").exists():
            _initdb(bin_dir, directory, password)
            state = {"auth": "trust" if password is None else "scram-sha-256"}
            _save_state(directory, state)
        elif password is not None and state.get("auth") == "trust":
            raise UsageError(
                f"{directory}: this cluster was created without a password; "
                "stop it and remove the directory to create one with a password"
            )
        remembered = state.get("port")
        if port is None and isinstance(remembered, int) and _port_free(remembered):
            port = remembered
        port = port or _free_port()
        sockets = str(directory) if len(str(directory)) <= _SOCKET_PATH_MAX else ""
        settings = {"listen_addresses": "127.0.0.1", "unix_socket_directories": sockets}
        conf = "".join(f"{k} = '{v.replace(chr(39), chr(39) * 2)}'\n" for k, v in settings.items())
        (data / _CONF).write_text(conf + f"port = {port}\n", encoding="utf-8")
        _chown(data / _CONF)
        _save_state(directory, {**state, "port": port})
        log = directory / "postgres.log"
        args = [str(bin_dir / "pg_ctl"), "start", "-D", str(data), "-l", str(log), "-w"]
        code, output = _run([*args, "-t", str(START_TIMEOUT)], directory, START_TIMEOUT + 30)
        if code != 0:
            text = log.read_text("utf-8", "replace") if log.exists() else output
            raise UsageError(f"the dev server in {directory} did not start:\n{_tail(text)}")
        return _url(port)


def stop(directory: Path) -> bool:
    """Stop the cluster in DIR (fast shutdown); False when it was not running."""
    directory = Path(directory).absolute()
    if not (directory / "data" / "PG_VERSION").exists():
        return False
    bin_dir = find_bin_dir()
    with _locked(directory):
        if _running_port(bin_dir, directory) is None:
            return False
        args = [str(bin_dir / "pg_ctl"), "stop", "-D", str(directory / "data"), "-m", "fast"]
        code, output = _run([*args, "-w", "-t", str(START_TIMEOUT)], directory, START_TIMEOUT + 30)
        if code != 0:
            message = " ".join(output.split())
            raise UsageError(f"could not stop the dev server in {directory}: {message}")
        return True


def url(directory: Path) -> str | None:
    """The admin URL of the running cluster in DIR; None when it is not running."""
    directory = Path(directory).absolute()
    if not (directory / "data" / "PG_VERSION").exists():
        return None
    port = _running_port(find_bin_dir(), directory)
    return None if port is None else _url(port)


def is_running(directory: Path) -> bool:
    return url(directory) is not None
