"""A self-hosted slippy-map tile server on loopback, standing in for 天地图 or a city's own.

Every ``/tiles/{z}/{x}/{y}.png`` is answered with the same map-paper tile (its
edges drawn, so a screenshot shows the tile grid); the paths asked for are
recorded, so a test can check what the browser fetched and with which key.
"""

from __future__ import annotations

import struct
import threading
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from simulators.servers import free_port


def tile_png() -> bytes:
    """A 256-pixel map-paper tile with its edges drawn."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + body))
        return struct.pack(">I", len(body)) + kind + body + crc

    paper, line = bytes([238, 240, 234]), bytes([190, 196, 204])
    edge = b"\x00" + line * 256
    inner = b"\x00" + line + paper * 254 + line
    rows = edge + inner * 254 + edge
    header = struct.pack(">IIBBBBB", 256, 256, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows))
    return png + chunk(b"IEND", b"")


TILE = tile_png()


class TileServer:
    """The tile server, in a thread of this process; use as a context manager."""

    def __init__(self) -> None:
        self.paths: list[str] = []
        served = self.paths

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.append(self.path)
                if not self.path.startswith("/tiles/"):
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(TILE)))
                self.end_headers()
                self.wfile.write(TILE)

            def log_message(self, format: str, *args: Any) -> None:
                pass  # the paths are kept in ``paths``

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def url(self, query: str = "") -> str:
        """The URL template of this server's tiles, for ``site.map.tiles.url``."""
        return f"http://127.0.0.1:{self.port}/tiles/{{z}}/{{x}}/{{y}}.png{query}"

    def __enter__(self) -> TileServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
