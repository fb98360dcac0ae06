"""docker-compose.yml and the Dockerfile name only things that exist, and every variable compose
reads is documented in .env.example.

Parsed, not run (no Docker here): each command is split like a shell would, and what it names is
looked up: `manage.py` commands among Django's commands, `python -m` / gunicorn modules by import
spec (and the WSGI callable on its module), `-c` config files and bind-mounted files on disk,
`python -c` code compiled, and URLs it fetches resolved by this project's URLconf.
"""

from __future__ import annotations

import importlib
import importlib.util
import json
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml
from django.core.management import get_commands
from django.urls import Resolver404, resolve

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
ENV_EXAMPLE = ROOT / ".env.example"
#: Images whose commands are theirs, not ours (their own binaries).
FOREIGN_IMAGES = ("postgres", "redis", "minio/minio", "minio/mc")


def compose() -> dict[str, Any]:
    return dict(yaml.safe_load(COMPOSE.read_text()))


def our_services() -> dict[str, dict[str, Any]]:
    return {
        name: service
        for name, service in compose()["services"].items()
        if not str(service.get("image", "")).startswith(FOREIGN_IMAGES)
    }


def argv_list(command: Any) -> list[list[str]]:
    """One command (string or exec list) as the argument vectors it runs (`sh -c "a && b"`)."""
    argv = shlex.split(command) if isinstance(command, str) else [str(a) for a in command]
    if argv[:1] == ["CMD"]:
        argv = argv[1:]
    if argv[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in re.split(r"&&|;", argv[2]) if part.strip()]
    return [argv]


def check_argv(argv: list[str]) -> list[str]:
    """What an argument vector names that does not exist (empty: all there)."""
    problems: list[str] = []
    if argv and argv[0] == "exec":
        argv = argv[1:]
    if not argv:
        return ["empty command"]
    program, args = argv[0], argv[1:]
    if program == "python" and args[:1] == ["manage.py"]:
        if not (ROOT / "manage.py").is_file():
            problems.append("manage.py missing")
        if len(args) < 2 or args[1] not in get_commands():
            problems.append(f"no management command {args[1:2]}")
    elif program == "python" and args[:1] == ["-m"]:
        if importlib.util.find_spec(args[1]) is None:
            problems.append(f"no module {args[1]}")
    elif program == "python" and args[:1] == ["-c"]:
        compile(args[1], "<healthcheck>", "exec")
        for url in re.findall(r"https?://[^/'\"]+(/[^'\" ]*)", args[1]):
            try:
                resolve(url)
            except Resolver404:
                problems.append(f"no view at {url}")
    elif program == "gunicorn":
        options, positional = args, [a for a in args if ":" in a and not a.startswith("-")]
        if "-c" not in options:
            problems.append("gunicorn without the shipped config (-c gunicorn.conf.py)")
        else:
            config = options[options.index("-c") + 1]
            if not (ROOT / config).is_file():
                problems.append(f"no config file {config}")
        for app in positional:
            module, _, attr = app.partition(":")
            if importlib.util.find_spec(module) is None:
                problems.append(f"no module {module}")
            elif not hasattr(importlib.import_module(module), attr):
                problems.append(f"{module} has no {attr}")
    else:
        problems.append(f"unknown program {program!r}: teach this test what it names")
    return problems


def test_compose_commands_and_health_checks_name_what_exists() -> None:
    services = our_services()
    assert {"web", "worker", "scheduler"} <= set(services)
    checked = 0
    for name, service in services.items():
        for command in (service.get("command"), (service.get("healthcheck") or {}).get("test")):
            if command is None:
                continue
            for argv in argv_list(command):
                assert check_argv(argv) == [], (name, argv)
                checked += 1
    assert checked >= 6
    # Web and worker have real health checks; web runs gunicorn with the shipped config.
    web, worker = services["web"], services["worker"]
    assert "/healthz" in json.dumps(web["healthcheck"]["test"])
    assert worker["healthcheck"]["test"][1:] == ["python", "manage.py", "worker_health"]
    assert "gunicorn -c gunicorn.conf.py backend.wsgi:application" in web["command"]


def test_compose_bind_mounts_exist_and_minio_setup_sets_cors() -> None:
    services = compose()["services"]
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source = str(volume).split(":", 1)[0]
            if source.startswith("./"):
                assert (ROOT / source).is_file(), (name, source)
    setup = services["minio-setup"]
    assert "mc cors set local/uploads" in setup["entrypoint"]
    assert "mc mb -p local/uploads" in setup["entrypoint"]
    rule = (ROOT / "deploy" / "minio" / "cors.xml").read_text()
    for needed in ("<AllowedMethod>POST</AllowedMethod>", "<AllowedMethod>PUT</AllowedMethod>"):
        assert needed in rule
    assert "<ExposeHeader>ETag</ExposeHeader>" in rule  # multipart reads each part's ETag


def documented_variables() -> set[str]:
    names = set()
    for line in ENV_EXAMPLE.read_text().splitlines():
        match = re.match(r"^#?\s*([A-Z][A-Z0-9_]*)=", line)
        if match:
            names.add(match.group(1))
    return names


def test_every_variable_compose_reads_is_in_env_example() -> None:
    text = "\n".join(
        line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")
    )
    # ${NAME}, ${NAME:-default}, ${NAME:?error}; $$ is compose's escape for a literal $.
    read = set(re.findall(r"(?<!\$)\$\{([A-Z][A-Z0-9_]*)", text))
    assert {"DJANGO_SECRET_KEY", "LOG_FORMAT", "METRICS_TOKEN"} <= read
    missing = read - documented_variables()
    assert not missing, f"add to .env.example: {sorted(missing)}"


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def test_dockerfile_names_what_exists() -> None:
    instructions = dockerfile_instructions()
    cmds = [rest for keyword, rest in instructions if keyword == "CMD"]
    assert len(cmds) == 1
    cmd = json.loads(cmds[0])
    assert cmd == ["gunicorn", "-c", "gunicorn.conf.py", "backend.wsgi:application"]
    assert check_argv(cmd) == []
    for keyword, rest in instructions:
        if keyword == "COPY":
            source = rest.split()[0]
            assert source == "." or (ROOT / source).exists(), source
        if keyword == "RUN" and "manage.py" in rest:
            argv = shlex.split(rest)
            argv = argv[argv.index("python") :]
            assert check_argv(argv) == [], argv


@pytest.mark.parametrize(
    ("argv", "problem"),
    [
        (["python", "manage.py", "no_such_command"], "no management command"),
        (["python", "-m", "backend.no_such_module"], "no module"),
        (["gunicorn", "backend.wsgi:application"], "without the shipped config"),
        (["gunicorn", "-c", "gunicorn.conf.py", "backend.wsgi:nothing"], "has no nothing"),
        (
            ["python", "-c", "import urllib.request; urllib.request.urlopen('http://x/nope')"],
            "no view",
        ),
    ],
)
def test_the_checker_catches_what_is_missing(argv: list[str], problem: str) -> None:
    assert any(problem in found for found in check_argv(argv)), check_argv(argv)
