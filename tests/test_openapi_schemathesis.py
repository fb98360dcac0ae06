"""The OpenAPI schema is exact: schemathesis (pinned in pyproject.toml) runs every check it has
(`--checks all`: status codes, content types, headers and bodies against the schema, positive
data accepted and negative data refused, auth, 405s ...) over every operation of
`/api/schema/`, authenticated with a token, against the live server with the S3 provider on a
moto server. Throttle rates of the test settings are high enough not to interfere.

Bounded: a fixed seed, a few examples per operation, one worker (CI has two cores); about a
minute. `SCHEMATHESIS_MAX_EXAMPLES` raises the count for a deeper local run.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = [pytest.mark.timeout(300), pytest.mark.xdist_group("schemathesis")]

ROOT = Path(__file__).resolve().parents[1]


def test_schemathesis_finds_no_failure_over_every_operation(
    live_server: Any, s3_server_storage: Any, transactional_db: None, tmp_path: Path
) -> None:
    from django.contrib.auth import get_user_model
    from rest_framework.authtoken.models import Token

    from tests.fixtures.providers import use_provider

    use_provider("s3")
    user = get_user_model().objects.create_user("schemathesis", password="st-password-1")
    token = Token.objects.create(user=user)
    report = tmp_path / "report.xml"
    command = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file",
        str(ROOT / "schemathesis.toml"),
        "run",
        f"{live_server.url}/api/schema/?format=json",
        "--checks",
        "all",
        "--header",
        f"Authorization: Token {token.key}",
        "--max-examples",
        os.environ.get("SCHEMATHESIS_MAX_EXAMPLES", "12"),
        "--seed",
        "20261201",
        "--workers",
        "1",
        "--generation-database",
        "none",
        "--no-color",
        "--report",
        "junit",
        "--report-junit-path",
        str(report),
    ]
    done = subprocess.run(
        command, cwd=tmp_path, capture_output=True, text=True, timeout=280, check=False
    )
    output = done.stdout + done.stderr
    # The failures, each line cut short (reproduction commands can be huge).
    failures = output.split("FAILURES", 1)[-1].split("WARNINGS", 1)[0]
    summary = "\n".join(line[:300] for line in failures.splitlines() if line.strip())
    assert done.returncode == 0, summary[:30_000] or output[-10_000:]
    assert "No issues found" in output or " passed" in output, output
    print("\n".join(line for line in output.splitlines() if "passed" in line or "Seed" in line))
