"""A small threaded TCP proxy for fault tests: cut the link, now or mid-stream.

    with TcpProxy("127.0.0.1", pg_port) as proxy:   # start() on entry, stop() on exit
        url = f"postgresql://...@127.0.0.1:{proxy.port}/..."
        proxy.cut()              # every live connection is reset (RST both ways);
                                 # new ones are accepted and reset at once
        proxy.restore()          # connections work again
        proxy.cut_after_bytes(500)  # forward 500 more client->server bytes, then cut()
        proxy.hold()             # forward nothing, either way, until release():
        proxy.release()          # a network that stalls without failing

One thread accepts; one thread per connection pair pumps both directions with
``select`` and a short tick, so a cut lands within ~50 ms. Every thread is a
daemon and every socket is closed by ``stop()``.
"""

from __future__ import annotations

import contextlib
import select
import socket
import struct
import threading
from types import TracebackType

_TICK = 0.05
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST


def _reset(sock: socket.socket) -> None:
    """Close abruptly: the peer sees a connection reset, not an orderly end."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    sock.close()


class _Pair:
    def __init__(self, proxy: TcpProxy, client: socket.socket, server: socket.socket) -> None:
        self.proxy = proxy
        self.client = client
        self.server = server
        self.cut = threading.Event()
        self.thread = threading.Thread(target=self._pump, name="tcp-proxy-pair", daemon=True)

    def _pump(self) -> None:
        open_from = {self.client: self.server, self.server: self.client}
        abrupt = False
        try:
            while open_from and not self.cut.is_set():
                if self.proxy.is_held:
                    self.cut.wait(_TICK)  # bytes wait in the kernel's buffers
                    continue
                readable, _, _ = select.select(list(open_from), [], [], _TICK)
                if self.proxy.is_held:  # held while we waited: bytes that came stay
                    continue
                for src in readable:
                    data = src.recv(65536)
                    dst = open_from[src]
                    if not data:  # orderly end of one direction: pass it on
                        del open_from[src]
                        dst.shutdown(socket.SHUT_WR)
                        continue
                    exhausted = False
                    if src is self.client:
                        data, exhausted = self.proxy._allow_upstream(data)
                    else:
                        self.proxy._count_down(len(data))
                        if self.proxy._losing_replies:
                            data = b""
                    if data:
                        dst.sendall(data)
                    if exhausted:
                        self.proxy.cut()  # sets self.cut too: the loop ends below
                    if self.cut.is_set():
                        break
        except OSError:
            abrupt = True
        finally:
            if abrupt or self.cut.is_set():
                _reset(self.client)
                _reset(self.server)
            else:
                self.client.close()
                self.server.close()
            self.proxy._forget(self)


class TcpProxy:
    """Forward 127.0.0.1:<port> to (target_host, target_port), with a switch to cut it."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.port = 0
        self.bytes_up = 0  # client -> server, forwarded
        self.bytes_down = 0
        self.connections = 0  # accepted while not cut
        self._lock = threading.Lock()
        self._pairs: set[_Pair] = set()
        self._cut = False
        self._budget: int | None = None
        self._losing_replies = False
        self._held = False
        self._stopping = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None

    def start(self) -> int:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._acceptor.start()
        return self.port

    @property
    def is_cut(self) -> bool:
        return self._cut

    def cut(self) -> None:
        """Reset every live connection and every new one until :meth:`restore`."""
        with self._lock:
            self._cut = True
            self._budget = None
            pairs = list(self._pairs)
        for pair in pairs:
            pair.cut.set()
        for pair in pairs:
            if pair.thread is not threading.current_thread():
                pair.thread.join(timeout=5)

    @property
    def is_held(self) -> bool:
        return self._held

    def hold(self) -> None:
        """Stall every connection (live and new): nothing is forwarded, nothing
        fails, until :meth:`release`."""
        self._held = True

    def release(self) -> None:
        self._held = False

    def restore(self) -> None:
        with self._lock:
            self._cut = False
            self._budget = None
            # A lose_replies timer that has cut but not yet reset must not go
            # on dropping the replies of connections made after this.
            self._losing_replies = False

    def cut_after_bytes(self, n: int) -> None:
        """Forward ``n`` more client->server bytes (any connection), then :meth:`cut`."""
        if n <= 0:
            self.cut()
            return
        with self._lock:
            self._budget = n

    def lose_replies(self, then_cut_after: float = 0.5) -> None:
        """Keep forwarding requests but drop every reply, then cut: the server
        does the work and commits, and the client never hears of it (a lost
        acknowledgement)."""
        self._losing_replies = True

        def cut_and_reset() -> None:
            self.cut()
            self._losing_replies = False

        timer = threading.Timer(then_cut_after, cut_and_reset)
        timer.daemon = True
        timer.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(timeout=5)
            self._acceptor = None
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            pair.cut.set()
        for pair in pairs:
            pair.thread.join(timeout=5)

    def __enter__(self) -> TcpProxy:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopping.is_set():
            readable, _, _ = select.select([self._listener], [], [], _TICK)
            if not readable:
                continue
            try:
                client, _ = self._listener.accept()
            except OSError:
                continue
            if self._cut:
                _reset(client)
                continue
            try:
                server = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            client.settimeout(10)  # bounds sendall to a peer that stopped reading
            server.settimeout(10)
            pair = _Pair(self, client, server)
            with self._lock:
                if self._cut or self._stopping.is_set():
                    _reset(client)
                    _reset(server)
                    continue
                self._pairs.add(pair)
                self.connections += 1
                pair.thread.start()  # under the lock: cut() never joins an unstarted thread

    def _allow_upstream(self, data: bytes) -> tuple[bytes, bool]:
        """The part of ``data`` the byte budget lets through, and whether it ran out."""
        with self._lock:
            if self._cut:
                return b"", False
            exhausted = False
            if self._budget is not None:
                data = data[: self._budget]
                self._budget -= len(data)
                exhausted = self._budget == 0
                if exhausted:  # the caller sends this last piece, then calls cut()
                    self._cut, self._budget = True, None
            self.bytes_up += len(data)
            return data, exhausted

    def _count_down(self, n: int) -> None:
        with self._lock:
            self.bytes_down += n

    def _forget(self, pair: _Pair) -> None:
        with self._lock:
            self._pairs.discard(pair)
