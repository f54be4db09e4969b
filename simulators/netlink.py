"""A TCP link a test can cut: a network partition between one program and a server.

Every connection goes through a forwarder on its own loopback port. ``cut()``
drops the connections open through it and refuses new ones (each is closed as
soon as it is accepted), as a broken route would; ``restore()`` lets them
through again. The server and the other programs reaching it directly see
nothing.
"""

from __future__ import annotations

import contextlib
import socket
import threading

from simulators.servers import free_port


class CuttableLink:
    """Forwards ``127.0.0.1:port`` to ``host:target_port`` until cut."""

    def __init__(self, target_port: int, host: str = "127.0.0.1") -> None:
        self.port = free_port()
        self.target = (host, target_port)
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._cut = False
        threading.Thread(target=self._accept, name="link:accept", daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._server.accept()
            except OSError:
                return  # closed
            if self._cut:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open |= {client, upstream}
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self._drop(source, sink)

    def _drop(self, *sockets: socket.socket) -> None:
        for s in sockets:
            with self._lock:
                self._open.discard(s)
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def cut(self) -> None:
        """Drop every connection through the link and refuse new ones."""
        self._cut = True
        with self._lock:
            open_now = list(self._open)
        self._drop(*open_now)

    def restore(self) -> None:
        """Let connections through again."""
        self._cut = False

    def close(self) -> None:
        """Cut, and stop listening."""
        self.cut()
        self._server.close()
