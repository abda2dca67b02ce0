"""A loopback TCP proxy that plays the network between a client and a node: it can be cut
and restored, or lose one request or reply and then go down (see `TcpProxy`)."""

from __future__ import annotations

import socket
import threading


class TcpProxy:
    """Forwards a loopback port to `upstream_port`, and can be cut and restored.

    `lose_next(SEND, "request")` swallows the next request containing `SEND` (the node
    never sees it); `lose_next(SEND, "reply")` forwards it and swallows the answer. Either
    way the proxy then goes down for `outage` seconds.
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self._lock = threading.Lock()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._armed: tuple[bytes, str, float] | None = None
        self._reply_outage = 0.0
        self.outages = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def restore(self) -> None:
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen()
        listener.settimeout(0.05)
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()

    def cut(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            sockets, self._sockets = self._sockets, set()
        for sock in [listener, *sockets]:
            if sock is not None:
                _close(sock)

    def cut_for(self, seconds: float) -> None:
        self.outages += 1
        self.cut()
        threading.Timer(seconds, self.restore).start()

    def lose_next(self, marker: bytes, what: str, outage: float) -> None:
        self._armed = (marker, what, outage)

    def _accept(self, listener: socket.socket) -> None:
        while self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            with self._lock:
                self._sockets |= {client, upstream}
            lost_reply = threading.Event()
            threading.Thread(target=self._pump_requests, args=(client, upstream, lost_reply), daemon=True).start()
            threading.Thread(target=self._pump_replies, args=(upstream, client, lost_reply), daemon=True).start()

    def _pump_requests(self, client: socket.socket, upstream: socket.socket, lost_reply: threading.Event) -> None:
        while chunk := _receive(client):
            armed = self._armed
            if armed is not None and armed[0] in chunk:
                self._armed = None
                if armed[1] == "request":
                    self.cut_for(armed[2])
                    return
                self._reply_outage = armed[2]
                lost_reply.set()
            if not _send(upstream, chunk):
                return

    def _pump_replies(self, upstream: socket.socket, client: socket.socket, lost_reply: threading.Event) -> None:
        while chunk := _receive(upstream):
            if lost_reply.is_set():
                self.cut_for(self._reply_outage)
                return
            if not _send(client, chunk):
                return


def _receive(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except OSError:
        return b""


def _send(sock: socket.socket, data: bytes) -> bool:
    try:
        sock.sendall(data)
        return True
    except OSError:
        return False


def _close(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()
