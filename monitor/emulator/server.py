"""The Stripe emulator served over HTTP: `start` and `serve_forever` put an `api.Emulator` behind a
`ThreadingHTTPServer` that the real `stripe` SDK can talk to (`StripeClient(key, base_addresses={"api":
base_url})`); `load_fixtures` reads the objects it serves from a file.
"""

import contextlib
import json
import signal
import socket
import sys
import threading
from collections.abc import Iterable
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from monitor.emulator.api import Emulator, Response, json_response, stamped
from monitor.emulator.protocol import objects_of
from monitor.emulator.state import ApiError, check_object


def load_fixtures(path: str | Path) -> list[dict]:
    """The objects of a fixtures file `{"objects": [...]}`; ValueError with a one-line reason otherwise."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ValueError(f"fixtures file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"cannot read fixtures file {path}: {error}") from None
    try:
        payload = json.loads(text)
    except json.JSONDecodeError as error:
        raise ValueError(
            f"fixtures file {path} is not valid JSON: {error.msg} (line {error.lineno}, column {error.colno})"
        ) from None
    try:
        objects = objects_of(payload)
        for position, obj in enumerate(objects):
            check_object(obj, position)
    except ValueError as error:
        raise ValueError(f"fixtures file {path}: {error}") from None
    return objects


# ---------------------------------------------------------------------------------------------------------
# HTTP


class _Handler(BaseHTTPRequestHandler):
    """Reads a request, asks the emulator, writes its answer."""

    protocol_version = "HTTP/1.1"  # keep-alive: the SDK reuses its connections
    disable_nagle_algorithm = True  # answer small responses at once, not after the client's delayed ACK
    server_version = "StripeEmulator"
    timeout = 60  # close idle keep-alive connections eventually
    server: "_Server"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - http.server's signature
        """Silent: http.server would print a line per request to stderr."""

    def _serve(self) -> None:
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            length = -1
        if length < 0:
            error = ApiError(400, "Invalid Content-Length header")
            response = stamped(json_response(error.status, error.body()))
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            response = self.server.emulator.handle(self.command, self.path, self.headers, body)
        self._write(response)

    def _write(self, response: Response) -> None:
        status = HTTPStatus(response.status)
        lines = [
            f"HTTP/1.1 {status.value} {status.phrase}",
            "Content-Type: application/json",
            f"Content-Length: {len(response.body)}",
            f"Server: {self.server_version}",
            f"Date: {self.date_time_string()}",
            *(f"{name}: {value}" for name, value in response.headers.items()),
        ]
        if self.close_connection:
            lines.append("Connection: close")
        # Two writes, not `head + body`: that would copy a 300 KB page; Nagle is off, so no stall between.
        self.wfile.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        self.wfile.write(response.body)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve


class _Server(ThreadingHTTPServer):
    """A threading HTTP server that can also drop its open keep-alive connections when stopped."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], emulator: Emulator):
        super().__init__(address, _Handler)
        self.emulator = emulator
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        """Hang up on every client, so a stopped emulator stops answering on pooled connections too."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):  # already closed by the client
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request, client_address) -> None:
        """Clients hanging up mid-answer are normal; only report real failures."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)


class RunningEmulator:
    """An emulator served from a daemon thread; `stop()` (or leaving the `with` block) ends it."""

    def __init__(self, server: _Server, thread: threading.Thread):
        self._server = server
        self._thread = thread
        self._stopped = False
        host, port = server.server_address[:2]
        if host in ("0.0.0.0", ""):
            host = "127.0.0.1"  # reachable from this machine whatever it listens on
        self.port: int = port
        self.base_url = f"http://{host}:{port}"
        self.emulator: Emulator = server.emulator

    def stop(self) -> None:
        """Stop listening and close open connections; safe to call twice."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)

    def __enter__(self) -> "RunningEmulator":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def start(
    objects: Iterable[dict] = (), *, host: str = "127.0.0.1", port: int = 0, **options
) -> RunningEmulator:
    """Serve an `Emulator(objects, **options)` in a daemon thread; port 0 picks a free port."""
    server = _Server((host, port), Emulator(objects, **options))
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="stripe-emulator", daemon=True
    )
    thread.start()
    return RunningEmulator(server, thread)


def serve_forever(objects: Iterable[dict], *, host: str = "127.0.0.1", port: int = 12111, **options) -> None:
    """Serve in the foreground until SIGINT or SIGTERM, then stop cleanly (no traceback).

    Prints one line, `Stripe emulator listening on http://HOST:PORT (N objects)`, once it accepts
    connections. OSError if the port cannot be bound; ValueError for a bad object or option.
    """
    stop = threading.Event()
    previous = {}
    try:  # before announcing the address: a signal sent right after the line must find our handlers
        for signum in (signal.SIGINT, signal.SIGTERM):
            previous[signum] = signal.signal(signum, lambda *_: stop.set())
    except ValueError:  # not the main thread: no handlers, Ctrl-C arrives as KeyboardInterrupt
        pass
    try:
        running = start(objects, host=host, port=port, **options)
    except BaseException:
        _restore(previous)
        raise
    count = running.emulator.object_count
    try:
        print(f"Stripe emulator listening on {running.base_url} ({count} objects)", flush=True)
        while not stop.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    finally:
        running.stop()
        _restore(previous)


def _restore(handlers: dict) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
