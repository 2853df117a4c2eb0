"""Real HTTP servers on 127.0.0.1 for the `openai` provider's tests: a fake OpenAI-compatible
chat endpoint the test steers (`OpenAIServer`), and the real `mlx_lm.server`.

The fixtures that start them (`openai_server`, `start_openai_server`, `tiny_server_url`) live in
tests/support/fixtures.py.
"""

import contextlib
import json
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Literal

from tests.support.processes import stop

# What the fake endpoint answers, in the format of the adapter the provider uses.
CHAT_ADAPTER_REPLY = "[[ ## answer ## ]]\nParis\n\n[[ ## completed ## ]]"
COMPACT_ADAPTER_REPLY = "Paris"

Mode = Literal["ok", "server_error", "unauthorized", "malformed", "slow", "echo"]


def free_port() -> int:
    """A port nothing listens on (yet): connections to it are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def chat_completion(content: str) -> dict:
    """An OpenAI chat completion answering `content`, with fixed token counts."""
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 0,
        "model": "test-model",
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": content},
            }
        ],
        "usage": {"prompt_tokens": 7, "completion_tokens": 1, "total_tokens": 8},
    }


def http_status(url: str) -> int:
    """The status a GET of `url` answers (4xx and 5xx included)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (local URL)
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@dataclass(frozen=True)
class ReceivedRequest:
    path: str
    authorization: str | None
    body: bytes


class OpenAIHandler(BaseHTTPRequestHandler):
    """Answers every POST as its `OpenAIServer` is told to (`server.mode`)."""

    # Without it, each response picked up about 44 ms of delay here (Nagle + delayed ACK).
    disable_nagle_algorithm = True

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        server: OpenAIServer = self.server  # type: ignore[assignment]
        with server.lock:
            server.requests.append(
                ReceivedRequest(self.path, self.headers.get("Authorization"), body)
            )
        if server.mode == "echo":
            self._echo(server)
            return
        status, payload = server.reply()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        with contextlib.suppress(OSError):  # the client gave up (the timeout test)
            self.wfile.write(payload)

    def _echo(self, server: "OpenAIServer") -> None:
        """Hand back what the request carried, every way an upstream can: the status line's
        reason, headers, and a body (an OpenAI error, a traceback, or a completion)."""
        authorization = self.headers.get("Authorization") or ""
        key = authorization.removeprefix("Bearer ")
        url = f"http://client:{key}@{self.headers.get('Host')}{self.path}?api_key={key}"
        if server.echo_body == "traceback":
            content_type = "text/plain"
            payload = (
                "Traceback (most recent call last):\n"
                '  File "proxy.py", line 7, in forward\n'
                f"    check(headers={dict(self.headers)!r})\n"
                f"PermissionError: Authorization: {authorization} is not valid for {url}\n"
            ).encode()
        elif server.echo_body == "completion":
            content_type = "application/json"
            completion = chat_completion(f"{authorization} {url}")
            payload = json.dumps(completion).encode()
        else:
            content_type = "application/json"
            error = {
                "message": f"Invalid header Authorization: {authorization} for {url}; key {key}",
                "type": key,
                "param": authorization,
                "code": key,
                "headers": dict(self.headers),
            }
            payload = json.dumps({"error": error, "request_id": key}).encode()
        self.send_response(server.echo_status, f"Rejected {authorization} {key}")
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Echo-Authorization", authorization)
        self.send_header("X-Request-Id", key)
        self.send_header("WWW-Authenticate", f'Bearer error="{key}"')
        self.send_header("Retry-After", "1")
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(payload)


class OpenAIServer(ThreadingHTTPServer):
    """A fake OpenAI-compatible chat endpoint, served from a thread.

    `mode` says how it answers each request, and a test may change it at any time:
    - `ok`: a chat completion whose text is `content` (7 prompt tokens, 1 completion token);
    - `server_error`: HTTP 500 with an OpenAI error body;
    - `unauthorized`: HTTP 401;
    - `malformed`: HTTP 200 whose body is not JSON;
    - `slow`: waits `delay_s`, then answers as `ok`;
    - `echo`: echoes the request's Authorization header and key (in the status line, headers
      and body) with HTTP `echo_status`; the body is `echo_body`: `error` (an OpenAI error
      body), `traceback` (a plain-text Python traceback) or `completion` (a chat completion
      whose text carries them).
    Every request is recorded in `requests`.
    """

    daemon_threads = True

    def __init__(
        self,
        *,
        port: int = 0,
        mode: Mode = "ok",
        content: str = CHAT_ADAPTER_REPLY,
        delay_s: float = 2.0,
        echo_status: int = 500,
        echo_body: Literal["error", "traceback", "completion"] = "error",
    ) -> None:
        super().__init__(("127.0.0.1", port), OpenAIHandler)
        self.mode = mode
        self.content = content
        self.delay_s = delay_s
        self.echo_status = echo_status
        self.echo_body = echo_body
        self.requests: list[ReceivedRequest] = []
        self.lock = threading.Lock()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/v1"

    @property
    def authorizations(self) -> list[str | None]:
        """The Authorization header of each request, in order."""
        return [request.authorization for request in self.requests]

    def reply(self) -> tuple[int, bytes]:
        if self.mode == "server_error":
            return 500, b'{"error": {"message": "internal failure", "type": "server_error"}}'
        if self.mode == "unauthorized":
            return 401, b'{"error": {"message": "invalid key"}}'
        if self.mode == "malformed":
            return 200, b'{"choices": [ not json'
        if self.mode == "slow":
            time.sleep(self.delay_s)
        completion = chat_completion(self.content)
        return 200, json.dumps(completion).encode()


@contextmanager
def serving(server: ThreadingHTTPServer) -> Iterator[ThreadingHTTPServer]:
    """Serve `server` from a thread for the duration of the block, then close it."""
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


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
        stop(process, timeout=10)
