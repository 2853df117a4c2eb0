"""Real HTTP servers on 127.0.0.1 for the `openai` provider's tests."""

import contextlib
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def mlx_lm_server(model_dir: Path, *, startup_timeout_s: float = 120.0) -> Iterator[str]:
    """`mlx_lm.server` serving `model_dir`; yields its base URL (`http://127.0.0.1:N/v1`)."""
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlx_lm.server",
            "--model",
            str(model_dir),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + startup_timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/models", timeout=2):
                    break
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(
                        f"mlx_lm.server exited: {process.stderr.read().decode()[-2000:]}"
                    ) from None
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


class ScriptedHandler(BaseHTTPRequestHandler):
    # Without it each response picked up about 44 ms of delay here (Nagle + delayed ACK).
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server: ScriptedServer = self.server  # type: ignore[assignment]
        server.authorizations.append(self.headers.get("Authorization"))
        status, body = server.reply()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up (the timeout test)
            self.wfile.write(body)


class ScriptedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), ScriptedHandler)
        self.authorizations: list[str | None] = []
        self.mode = "ok"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    def reply(self) -> tuple[int, bytes]:
        if self.mode == "server_error":
            return 500, b'{"error": {"message": "internal failure"}}'
        if self.mode == "malformed":
            return 200, b'{"choices": [ not json'
        if self.mode == "unauthorized":
            return 401, b'{"error": {"message": "invalid key"}}'
        if self.mode == "slow":
            time.sleep(2.0)
        return 200, (
            b'{"id": "1", "object": "chat.completion", "created": 0, "model": "m",'
            b' "choices": [{"index": 0, "finish_reason": "stop",'
            b' "message": {"role": "assistant", "content": "Paris"}}],'
            b' "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8}}'
        )


@contextmanager
def scripted_server() -> Iterator[ScriptedServer]:
    server = ScriptedServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
