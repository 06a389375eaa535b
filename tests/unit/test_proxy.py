"""The fault-test proxy (tests/proxy.py) against a tiny threaded echo server."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from tests.proxy import TcpProxy


class EchoServer:
    """Echoes every byte back; counts what it received; closes everything on stop()."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(0.05)
        self.port: int = self.listener.getsockname()[1]
        self.received = 0
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []
        self.accept_thread = threading.Thread(target=self._accept, daemon=True)
        self.accept_thread.start()

    def _accept(self) -> None:
        while not self.stopping.is_set():
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            thread = threading.Thread(target=self._echo, args=(conn,), daemon=True)
            self.threads.append(thread)
            thread.start()

    def _echo(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            while not self.stopping.is_set():
                try:
                    data = conn.recv(4096)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                self.received += len(data)
                try:
                    conn.sendall(data)
                except OSError:
                    return

    def stop(self) -> None:
        self.stopping.set()
        self.accept_thread.join(timeout=5)
        for thread in self.threads:
            thread.join(timeout=5)
        self.listener.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.stop()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[TcpProxy]:
    with TcpProxy("127.0.0.1", echo.port) as running:
        yield running


def connect(proxy: TcpProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            break
        data += chunk
    return data


def drain(sock: socket.socket) -> bytes:
    """Everything that arrives until the connection ends (EOF or reset)."""
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data


def is_broken(sock: socket.socket) -> bool:
    """True when the connection ends: EOF or a reset (sending may fail first)."""
    try:
        sock.sendall(b"ping")
        return sock.recv(16) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True


def new_connection_fails(proxy: TcpProxy) -> bool:
    """Accepted and reset at once: connect() itself may already see the reset."""
    try:
        with connect(proxy) as sock:
            return is_broken(sock)
    except ConnectionError:
        return True


def test_bytes_flow_both_ways(proxy: TcpProxy, echo: EchoServer) -> None:
    payload = bytes(range(256)) * 400  # 100 KiB: several reads and sends
    with connect(proxy) as sock:
        sock.sendall(payload)
        assert recv_exactly(sock, len(payload)) == payload
    assert proxy.bytes_up == len(payload)
    assert proxy.bytes_down == len(payload)
    assert proxy.connections == 1


def test_cut_breaks_open_connections_and_refuses_new_ones(proxy: TcpProxy) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"hello")
        assert recv_exactly(sock, 5) == b"hello"
        proxy.cut()
        assert proxy.is_cut
        assert is_broken(sock)
    for _ in range(3):  # new connections fail while cut
        assert new_connection_fails(proxy)
    proxy.restore()
    with connect(proxy) as sock:
        sock.sendall(b"again")
        assert recv_exactly(sock, 5) == b"again"


def test_cut_after_bytes_forwards_exactly_n_then_cuts(proxy: TcpProxy, echo: EchoServer) -> None:
    with connect(proxy) as sock:
        sock.sendall(b"warm")
        assert recv_exactly(sock, 4) == b"warm"
        proxy.cut_after_bytes(10)
        sock.sendall(b"0123456789abcdefghij")  # the batch: cut in its middle
        got = drain(sock)
        assert got == b"0123456789"[: len(got)]  # the echo of the 10 may race the reset
    deadline = time.monotonic() + 5
    while echo.received < 14 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert echo.received == 14  # 4 warm-up bytes + exactly 10 of the batch
    assert proxy.bytes_up == 14
    assert proxy.is_cut
    proxy.restore()
    with connect(proxy) as sock:
        sock.sendall(b"after")
        assert recv_exactly(sock, 5) == b"after"


def test_stop_closes_connections(echo: EchoServer) -> None:
    proxy = TcpProxy("127.0.0.1", echo.port)
    port = proxy.start()
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(b"x")
        assert recv_exactly(sock, 1) == b"x"
        proxy.stop()
        assert is_broken(sock)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=5).close()
