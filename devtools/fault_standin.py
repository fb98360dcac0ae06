"""A TCP stand-in for a provider that misbehaves: put it where S3 or Cloudinary should be.

    python -m devtools.fault_standin --port 24010 --mode hang
    python -m devtools.fault_standin --port 24010 --mode slow --delay 20 --upstream 127.0.0.1:9000
    python -m devtools.fault_standin --port 24010 --mode trickle --upstream 127.0.0.1:9000

Point the app at it (AWS_S3_ENDPOINT_URL=http://127.0.0.1:24010, or CLOUDINARY_DELIVERY_PREFIX /
CLOUDINARY_UPLOAD_PREFIX for Cloudinary) and watch what a hung or slow provider does to the
service. Modes (switch at run time with `set_mode`; open connections are dropped on a switch so
clients reconnect into the new behaviour):

- `hang`: accepts every connection, reads what is sent, never answers (a provider that is up at
  the TCP level and stuck above it: the case a connect timeout does not catch);
- `slow`: relays to `upstream`, holding every piece of its answer back `delay` seconds (a
  provider that answers, late); without an upstream it answers `status` after the delay;
- `trickle`: relays to `upstream` but sends its answer back one byte every `interval` seconds, so
  every single socket read succeeds and no per-read timeout ever fires;
- `proxy`: relays both ways to `upstream` (the provider answers again);
- `status`: answers every request at once with HTTP `status` (e.g. 500 or 503) and a short body;
- `reset`: accepts and closes at once (connection reset / remote end closed).

Not an HTTP server: except in `status`, it never parses what it relays.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import selectors
import socket
import threading
import time
from dataclasses import dataclass

logger = logging.getLogger(__name__)

MODES = ("hang", "slow", "trickle", "proxy", "status", "reset")
_CHUNK = 65536


@dataclass(frozen=True)
class Behaviour:
    mode: str
    delay: float = 0.0
    interval: float = 0.5
    status: int = 503


class FaultStandin:
    """A loopback TCP server whose behaviour is switchable. `start()`, then `.url`."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        mode: str = "hang",
        upstream: tuple[str, int] | None = None,
        delay: float = 0.0,
        interval: float = 0.5,
        status: int = 503,
    ) -> None:
        self.host = host
        self.upstream = upstream
        self._behaviour = self._checked(Behaviour(mode, delay, interval, status))
        self._listener = socket.create_server((host, port), backlog=128)
        self.port = int(self._listener.getsockname()[1])
        self._stopped = threading.Event()
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._generation = 0
        #: Connections accepted so far (tests assert that a fail-fast call made none).
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept_loop, name="fault-standin", daemon=True)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def mode(self) -> str:
        return self._behaviour.mode

    def start(self) -> FaultStandin:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self._listener.close()
        self.drop_connections()

    def set_mode(
        self,
        mode: str,
        *,
        upstream: tuple[str, int] | None = None,
        delay: float | None = None,
        interval: float | None = None,
        status: int | None = None,
    ) -> None:
        """Switch behaviour; connections already open are closed so clients reconnect."""
        current = self._behaviour
        behaviour = self._checked(
            Behaviour(
                mode,
                current.delay if delay is None else delay,
                current.interval if interval is None else interval,
                current.status if status is None else status,
            ),
            upstream or self.upstream,
        )
        with self._lock:
            if upstream is not None:
                self.upstream = upstream
            self._behaviour = behaviour
            self._generation += 1
        self.drop_connections()

    def drop_connections(self) -> None:
        with self._lock:
            conns, self._open = list(self._open), set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()

    def _checked(self, behaviour: Behaviour, upstream: tuple[str, int] | None = None) -> Behaviour:
        if behaviour.mode not in MODES:
            raise ValueError(f"unknown mode {behaviour.mode!r}; one of {', '.join(MODES)}")
        if behaviour.mode in ("trickle", "proxy") and not (upstream or self.upstream):
            raise ValueError(f"mode {behaviour.mode!r} needs an upstream (host, port)")
        return behaviour

    # --- serving ---------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        # A timeout, so stop() is noticed: closing a socket does not wake a blocked accept().
        self._listener.settimeout(0.1)
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._open.add(conn)
                behaviour, generation, upstream = self._behaviour, self._generation, self.upstream
            threading.Thread(
                target=self._serve,
                args=(conn, behaviour, generation, upstream),
                name="fault-standin-conn",
                daemon=True,
            ).start()

    def _current(self, generation: int) -> bool:
        return not self._stopped.is_set() and self._generation == generation

    def _serve(
        self,
        conn: socket.socket,
        behaviour: Behaviour,
        generation: int,
        upstream: tuple[str, int] | None,
    ) -> None:
        try:
            if behaviour.mode == "reset":
                return
            if behaviour.mode == "hang":
                self._swallow(conn, generation, until=None)
                return
            if behaviour.mode == "slow" and upstream is None:
                self._swallow(conn, generation, until=time.monotonic() + behaviour.delay)
                if self._current(generation):
                    self._answer_status(conn, behaviour.status)
                return
            if behaviour.mode == "status":
                self._answer_status(conn, behaviour.status)
                return
            assert upstream is not None
            self._relay(conn, upstream, generation, behaviour)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def _swallow(self, conn: socket.socket, generation: int, until: float | None) -> None:
        """Read and drop what the client sends until `until` (None: for as long as we run)."""
        conn.settimeout(0.1)
        while self._current(generation):
            if until is not None and time.monotonic() >= until:
                return
            try:
                if not conn.recv(_CHUNK):
                    return
            except TimeoutError:
                continue

    def _answer_status(self, conn: socket.socket, status: int) -> None:
        conn.settimeout(1.0)
        with contextlib.suppress(OSError):
            conn.recv(_CHUNK)  # the request (its content does not matter)
        body = b'{"error": {"message": "fault stand-in"}}'
        head = (
            f"HTTP/1.1 {status} Fault\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        conn.sendall(head + body)

    def _relay(
        self,
        conn: socket.socket,
        upstream: tuple[str, int],
        generation: int,
        behaviour: Behaviour,
    ) -> None:
        """Relay both ways; the upstream's answer is held back as the mode says."""
        with socket.create_connection(upstream, timeout=5) as up:
            for sock in (conn, up):
                sock.setblocking(False)
            sel = selectors.DefaultSelector()
            sel.register(conn, selectors.EVENT_READ)
            sel.register(up, selectors.EVENT_READ)
            held: list[tuple[float, bytes]] = []  # (when it may go out, bytes) toward the client
            up_open = True
            while self._current(generation):
                for key, _ in sel.select(timeout=0.02):
                    src = key.fileobj
                    assert isinstance(src, socket.socket)
                    try:
                        data = src.recv(_CHUNK)
                    except BlockingIOError:
                        continue
                    if src is conn:
                        if not data:
                            return
                        _send(up, data)
                    elif not data:
                        sel.unregister(up)
                        up_open = False
                    elif behaviour.mode == "slow":
                        held.append((time.monotonic() + behaviour.delay, data))
                    elif behaviour.mode == "trickle":
                        held.extend((0.0, data[i : i + 1]) for i in range(len(data)))
                    else:
                        _send(conn, data)
                now = time.monotonic()
                if behaviour.mode == "trickle":
                    if held and now >= held[0][0]:
                        _send(conn, held.pop(0)[1])
                        if held:
                            held[0] = (now + behaviour.interval, held[0][1])
                else:
                    while held and now >= held[0][0]:
                        _send(conn, held.pop(0)[1])
                if not up_open and not held:
                    return


def _send(sock: socket.socket, data: bytes) -> None:
    sock.setblocking(True)
    try:
        sock.sendall(data)
    finally:
        sock.setblocking(False)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=24010)
    parser.add_argument("--mode", choices=MODES, default="hang")
    parser.add_argument("--upstream", help="host:port to relay to (slow, trickle, proxy)")
    parser.add_argument("--delay", type=float, default=20.0, help="slow: seconds before relaying")
    parser.add_argument("--interval", type=float, default=1.0, help="trickle: seconds per byte")
    parser.add_argument("--status", type=int, default=503, help="status (and slow): HTTP status")
    args = parser.parse_args(argv)
    upstream = None
    if args.upstream:
        host, _, port = args.upstream.rpartition(":")
        upstream = (host or "127.0.0.1", int(port))
    standin = FaultStandin(
        host=args.host,
        port=args.port,
        mode=args.mode,
        upstream=upstream,
        delay=args.delay,
        interval=args.interval,
        status=args.status,
    ).start()
    print(f"fault stand-in ({args.mode}) listening on {standin.url}")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        standin.stop()


if __name__ == "__main__":
    main()
