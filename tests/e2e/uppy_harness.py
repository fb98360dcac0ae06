"""Building the real-Uppy harnesses (tests/e2e/uppy for 5.x, tests/e2e/uppy6 for 6.x): each is
an npm package pinned by its package-lock.json (`make test` installs it), bundled by esbuild
into a temporary directory when the tests run."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.conftest import skip_or_fail

E2E = Path(__file__).resolve().parent

PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Uppy harness</title>
<link rel="icon" href="data:,"></head>
<body><script src="uppy-harness.js"></script></body></html>
"""


def _installed_version(harness: Path, package: str) -> str | None:
    manifest = harness / "node_modules" / package / "package.json"
    if not manifest.is_file():
        return None
    return str(json.loads(manifest.read_text())["version"])


def build(harness: Path, site: Path) -> Path:
    """Bundle `harness/entry.js` into `site/uppy-harness.js` beside an index.html."""
    if shutil.which("node") is None:
        skip_or_fail("node is not installed (needed to bundle the Uppy harness)")
    wanted = json.loads((harness / "package.json").read_text())["devDependencies"]
    for package, version in wanted.items():
        installed = _installed_version(harness, package)
        if installed != version:
            skip_or_fail(
                f"the Uppy harness is not installed ({package} {installed or 'missing'}, "
                f"want {version}): run `npm ci --prefix {harness.relative_to(E2E.parents[1])} "
                "--no-audit --no-fund`"
            )
    built = subprocess.run(
        [
            str(harness / "node_modules" / ".bin" / "esbuild"),
            "entry.js",
            "--bundle",
            "--format=iife",
            "--target=es2020",
            "--log-level=warning",
            f"--outfile={site / 'uppy-harness.js'}",
        ],
        cwd=harness,
        # The page code it imports (docs/uppy/) lives outside the harness: resolve its
        # `@uppy/...` imports from the harness's node_modules.
        env={**os.environ, "NODE_PATH": str(harness / "node_modules")},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert built.returncode == 0, f"esbuild failed:\n{built.stdout}\n{built.stderr}"
    (site / "index.html").write_text(PAGE)
    return site


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextlib.contextmanager
def serve(site: Path) -> Iterator[str]:
    """`site` on its own loopback origin (another origin than the API's live server)."""
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
