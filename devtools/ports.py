"""A free loopback port for the servers tests and benchmarks start.

From TEST_PORT_RANGE (default 24000-24999): below the kernel's ephemeral range (32768-60999),
where a bind fails now and then when an outbound connection holds the port. Random order, so
parallel test workers and a bench rarely try the same port first."""

from __future__ import annotations

import os
import random
import socket


def free_port() -> int:
    low, _, high = os.environ.get("TEST_PORT_RANGE", "24000-24999").partition("-")
    ports = list(range(int(low), int(high) + 1))
    random.shuffle(ports)
    for port in ports:
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port in TEST_PORT_RANGE")
