"""Helpers of the trust tests: run the CLI, assert a one-line error, prove nothing changed,
serve crafted bytes from a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from click.testing import CliRunner, Result

from mliapdb.cli.main import cli


def run(*args: object, input: str | None = None) -> Result:
    """``mliapdb ARGS`` in-process (stdout and stderr kept apart)."""
    return CliRunner().invoke(cli, [str(a) for a in args], input=input)


def assert_one_line_error(result: Result, *expected: str, code: int = 1) -> str:
    """The command failed with exit ``code``, no traceback, and stderr is exactly one
    ``Error: ...`` line containing every ``expected`` piece; returns that line."""
    assert result.exit_code == code, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for piece in expected:
        assert piece in lines[0], (piece, lines[0])
    return lines[0]


def digest(path: Path) -> str:
    """sha256 of a file, or of every file below a folder (names and bytes), or "absent"."""
    path = Path(path)
    if not path.exists():
        return "absent"
    h = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        h.update(str(file.relative_to(path) if path.is_dir() else file.name).encode() + b"\0")
        h.update(file.read_bytes())
    return h.hexdigest()


@contextmanager
def unchanged(*paths: Path) -> Iterator[None]:
    """Assert that every path (file or folder, present or not) is byte-identical afterwards."""
    before = {p: digest(p) for p in paths}
    yield
    after = {p: digest(p) for p in paths}
    changed = [str(p) for p in paths if before[p] != after[p]]
    assert not changed, f"changed: {changed}"


Responder = Callable[[BaseHTTPRequestHandler], None]
"""Answers one GET request (writes status, headers and body itself)."""


class CraftedServer(ThreadingHTTPServer):
    """A real HTTP server on 127.0.0.1 whose answers are functions of the request path."""

    daemon_threads = True

    def __init__(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                outer.requests.append(self.path)
                route = outer.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                with suppress(BrokenPipeError, ConnectionResetError):
                    route(self)

        super().__init__(("127.0.0.1", 0), Handler)
        self.routes: dict[str, Responder] = {}
        self.requests: list[str] = []

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{path.lstrip('/')}"


@contextmanager
def crafted_server() -> Iterator[CraftedServer]:
    """A :class:`CraftedServer` running in a thread for the duration of the block."""
    server = CraftedServer()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def send_range(handler: BaseHTTPRequestHandler, data: bytes, cut: int | None = None) -> None:
    """Answer ``handler``'s GET with ``data``, honouring a ``Range`` header (206, or 416 past
    the end); with ``cut``, send that many bytes of the body and drop the connection."""
    import socket

    byte_range = handler.headers.get("Range")
    start, end, status = 0, len(data) - 1, 200
    if byte_range:
        first, last = byte_range.removeprefix("bytes=").split("-")
        start, end, status = int(first), min(int(last or len(data) - 1), len(data) - 1), 206
        if start >= len(data):
            handler.send_response(416)
            handler.send_header("Content-Range", f"bytes */{len(data)}")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
    body = data[start:end + 1]
    handler.send_response(status)
    handler.send_header("Content-Length", str(len(body)))
    handler.send_header("Accept-Ranges", "bytes")
    if status == 206:
        handler.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
    handler.end_headers()
    if cut is None:
        handler.wfile.write(body)
        return
    handler.wfile.write(body[:cut])
    handler.wfile.flush()
    handler.close_connection = True
    handler.connection.shutdown(socket.SHUT_RDWR)


def file_route(path: Path) -> Responder:
    """A route serving the bytes of ``path`` (read at request time) with Range support."""
    return lambda handler: send_range(handler, Path(path).read_bytes())


def build_db(path: Path, *steps: tuple) -> Path:
    """Run each CLI step (arguments after ``--db path``) and assert it succeeded."""
    for step in steps:
        result = run("--db", path, *step)
        assert result.exit_code == 0, (step, result.output)
    return path
