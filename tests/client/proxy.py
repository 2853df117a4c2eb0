"""A real HTTP proxy on 127.0.0.1 between the client and the live server, for the client's
retry tests: it records every request it forwards and, for the first `drops` of them, forwards
the request and then closes the connection without answering, as a network that fails after
the server did the work would."""

import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

# Hop-by-hop headers, and those httpx recomputes for the forwarded request or the answer.
_NOT_FORWARDED = {"host", "connection", "content-length", "transfer-encoding", "content-encoding"}


@dataclass(frozen=True)
class ProxiedRequest:
    method: str
    path: str
    idempotency_key: str | None
    # The upstream's status; None where the proxy dropped the answer.
    status: int | None


class _Handler(BaseHTTPRequestHandler):
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        self._forward()

    def do_POST(self) -> None:
        self._forward()

    def _forward(self) -> None:
        proxy: DroppingProxy = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _NOT_FORWARDED}
        answer = httpx.request(
            self.command, proxy.upstream + self.path, content=body, headers=headers, timeout=60
        )
        with proxy.lock:
            drop = proxy.drops > 0
            proxy.drops -= drop
            proxy.requests.append(
                ProxiedRequest(
                    self.command,
                    self.path,
                    self.headers.get("Idempotency-Key"),
                    None if drop else answer.status_code,
                )
            )
        self.close_connection = True
        if drop:
            return
        self.send_response(answer.status_code)
        for name, value in answer.headers.items():
            if name.lower() not in _NOT_FORWARDED:
                self.send_header(name, value)
        self.send_header("Content-Length", str(len(answer.content)))
        self.end_headers()
        self.wfile.write(answer.content)


class DroppingProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream: str, *, drops: int = 0) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream = upstream
        self.drops = drops
        self.requests: list[ProxiedRequest] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"
