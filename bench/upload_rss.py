"""The web process's memory during a 1 GiB upload: S3 multipart (moto server) and Cloudinary
chunked (the stand-in). The bytes go from the client straight to the provider; the web process
only signs and verifies, so its RSS must stay flat whatever the file's size.

gunicorn (the shipped config, production settings, one worker) runs the API on a SQLite file;
this script is the client (plain `requests`, as docs/api.md describes) and samples the worker's
VmRSS from /proc/<pid>/status every 20 ms. Prints start / peak / end RSS per flow.

Run: .venv/bin/python bench/upload_rss.py [--size-mib 1024]
Needs Redis (production settings refuse to start without it): BENCH_REDIS_URL, else
TEST_REDIS_URL, else redis://127.0.0.1:6379/0. Ports come from TEST_PORT_RANGE when set.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# moto keeps a key's bytes in a SpooledTemporaryFile rolled to disk above this size, and its
# CompleteMultipartUpload fails on parts rolled to disk ("I/O operation on closed file"); the
# emulator's memory is not what this measures, so parts stay in its (this process's) memory.
os.environ.setdefault("MOTO_S3_DEFAULT_KEY_BUFFER_SIZE", str(4 * 1024**3))

import requests  # noqa: E402

from devtools.cloudinary_standin import CloudinaryStandin  # noqa: E402
from devtools.moto_s3 import DEV_ACCESS_KEY, DEV_SECRET_KEY, MotoS3  # noqa: E402
from devtools.ports import free_port  # noqa: E402

MiB = 1024 * 1024
MP4_HEADER = b"\x00\x00\x00\x18ftypmp42\x00\x00\x00\x00mp42isom"
BUCKET = "bench-rss"
CLOUD, KEY, SECRET = "bench", "222222222222222", "bench-standin-secret"
USER, PASSWORD = "bench", "bench-password-1"


def write_file(path: Path, size: int) -> None:
    block = os.urandom(8 * MiB)
    with path.open("wb") as handle:
        handle.write(MP4_HEADER)
        written = len(MP4_HEADER)
        while written < size:
            piece = block[: size - written]
            handle.write(piece)
            written += len(piece)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


class Sampler(threading.Thread):
    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid = pid
        self.samples: list[int] = []
        self.running = True

    def run(self) -> None:
        while self.running:
            try:
                self.samples.append(rss_kib(self.pid))
            except (OSError, RuntimeError):
                return  # the worker is gone (the flow failed and the server is being stopped)
            time.sleep(0.02)

    def stop(self) -> list[int]:
        self.running = False
        self.join()
        return self.samples


def manage(env: dict[str, str], *args: str) -> None:
    subprocess.run(
        [sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True, capture_output=True
    )


def worker_pid(master: int) -> int:
    """The one live worker the gunicorn master forked (a process with memory of its own)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for child in Path(f"/proc/{master}/task/{master}/children").read_text().split():
            status = Path(f"/proc/{child}/status").read_text()
            if "VmRSS:" in status:
                return int(child)
        time.sleep(0.1)
    raise RuntimeError("gunicorn started no worker")


def check(response: requests.Response) -> requests.Response:
    if not response.ok:
        raise RuntimeError(f"{response.request.method} {response.url}: {response.text[:500]}")
    return response


def s3_multipart(api: requests.Session, base: str, path: Path, size: int) -> dict[str, Any]:
    created = api.post(
        f"{base}/uploads/multipart/",
        json={"filename": path.name, "content_type": "video/mp4", "size": size},
        timeout=60,
    )
    body = check(created).json()
    part_size, count = body["part_size"], body["part_count"]
    parts = []
    with path.open("rb") as handle, requests.Session() as provider:
        for first in range(1, count + 1, 100):
            numbers = list(range(first, min(count, first + 99) + 1))
            signed = api.post(
                f"{base}/uploads/{body['id']}/multipart/parts/",
                json={"part_numbers": numbers},
                timeout=60,
            )
            check(signed)
            for part in signed.json()["parts"]:
                handle.seek((part["part_number"] - 1) * part_size)
                answer = provider.put(
                    part["url"], data=handle.read(part_size), headers=part["headers"], timeout=300
                )
                check(answer)
                parts.append({"part_number": part["part_number"], "etag": answer.headers["ETag"]})
    done = api.post(
        f"{base}/uploads/{body['id']}/multipart/complete/", json={"parts": parts}, timeout=300
    )
    check(done)
    return {"status": done.json()["status"], "requests": count}


def cloudinary_chunked(api: requests.Session, base: str, path: Path, size: int) -> dict[str, Any]:
    created = api.post(
        f"{base}/uploads/",
        json={"filename": path.name, "content_type": "video/mp4", "size": size},
        timeout=60,
    )
    body = check(created).json()
    upload = body["upload"]
    assert upload["protocol"] == "chunked", upload["protocol"]
    chunked = upload["chunked"]
    chunk, total = chunked["chunk_size"], chunked["total_size"]
    answer: dict[str, Any] = {}
    with path.open("rb") as handle, requests.Session() as provider:
        for start in range(0, total, chunk):
            data = handle.read(chunk)
            headers = {
                **upload["headers"],
                "Content-Range": chunked["content_range"].format(
                    start=start, end=start + len(data) - 1, total=total
                ),
            }
            sent = provider.post(
                upload["url"],
                data=upload["fields"],
                files={"file": (path.name, data, "application/octet-stream")},
                headers=headers,
                timeout=300,
            )
            check(sent)
            answer = sent.json()
    confirmed = api.post(f"{base}/uploads/{body['id']}/confirm/", json=answer, timeout=300)
    check(confirmed)
    return {"status": confirmed.json()["status"], "requests": chunked["chunk_count"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    args = parser.parse_args()
    size = args.size_mib * MiB
    redis_url = (
        os.environ.get("BENCH_REDIS_URL")
        or os.environ.get("TEST_REDIS_URL")
        or "redis://127.0.0.1:6379/0"
    )
    tmp = Path(tempfile.mkdtemp(prefix="upload-rss-"))
    path = tmp / "big.mp4"
    write_file(path, size)
    warm = tmp / "warm.mp4"
    write_file(warm, 128 * MiB)  # above Cloudinary's single request: chunked as well
    moto = MotoS3(port=free_port(), bucket=BUCKET).start()
    standin = CloudinaryStandin(
        cloud_name=CLOUD, api_key=KEY, api_secret=SECRET, port=free_port()
    ).start()
    port = free_port()
    tag = uuid.uuid4().hex[:10]
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "PYTHONPATH": str(ROOT),
        "DJANGO_SETTINGS_MODULE": "backend.settings",
        "DJANGO_DEBUG": "0",
        "DJANGO_SECRET_KEY": "bench-secret-key-not-for-production",
        "DJANGO_ENV_FILE": str(tmp / "no.env"),
        "DJANGO_ALLOWED_HOSTS": "127.0.0.1",
        "DATABASE_URL": f"sqlite:///{tmp / 'bench.sqlite3'}",
        "REDIS_URL": redis_url,
        "CACHE_URL": f"{redis_url}?key_prefix=bench-{tag}",
        "PROVIDER_BREAKER_KEY_PREFIX": f"bench-{tag}:breaker",
        "CLOUDINARY_CLOUD_NAME": CLOUD,
        "CLOUDINARY_API_KEY": KEY,
        "CLOUDINARY_API_SECRET": SECRET,
        "CLOUDINARY_UPLOAD_PREFIX": standin.url,
        "CLOUDINARY_DELIVERY_PREFIX": standin.url,
        "AWS_STORAGE_BUCKET_NAME": BUCKET,
        "AWS_S3_REGION_NAME": "us-east-1",
        "AWS_S3_ENDPOINT_URL": moto.endpoint_url,
        "AWS_ACCESS_KEY_ID": DEV_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": DEV_SECRET_KEY,
        "GUNICORN_BIND": f"127.0.0.1:{port}",
        "GUNICORN_WORKERS": "1",
        "GUNICORN_ACCESS_LOG": "",
        "LOG_LEVEL": "WARNING",
        # moto assembles 1 GiB in CompleteMultipartUpload far slower than S3 does: give the
        # emulator's answer time (the deadline must stay below gunicorn's worker timeout).
        "PROVIDER_DEADLINE_SECONDS": "90",
        "GUNICORN_TIMEOUT": "180",
    }
    manage(env, "migrate", "--noinput")
    setup = (
        "from django.contrib.auth import get_user_model;"
        "from backend.core.models import AppConfig;"
        f"get_user_model().objects.create_user(username={USER!r}, password={PASSWORD!r});"
        "c = AppConfig.load();"
        f"c.max_upload_size = {size + MiB};"
        f"c.max_bytes_per_user_per_day = {4 * size + 1024**3};"
        "c.save()"
    )
    manage(env, "shell", "-c", setup)
    log = (tmp / "gunicorn.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "gunicorn.conf.py", "backend.wsgi:application"],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        for _ in range(300):
            try:
                if requests.get(f"http://127.0.0.1:{port}/healthz", timeout=1).ok:
                    break
            except requests.RequestException:
                time.sleep(0.1)
        pid = worker_pid(proc.pid)
        api = requests.Session()
        token = api.post(
            f"{base}/auth/token/", json={"username": USER, "password": PASSWORD}, timeout=30
        )
        token.raise_for_status()
        api.headers["Authorization"] = f"Token {token.json()['token']}"
        print(f"{args.size_mib} MiB upload; gunicorn worker pid {pid}; RSS in MiB")
        for provider, flow in (("s3", s3_multipart), ("cloudinary", cloudinary_chunked)):
            manage(
                env,
                "shell",
                "-c",
                f"from backend.core.models import AppConfig; c = AppConfig.load(); "
                f"c.provider = {provider!r}; c.save()",
            )
            # Warm up: a first upload pays one-off costs (imports, SDK clients, connections).
            before = rss_kib(pid)
            flow(api, base, warm, 128 * MiB)
            print(
                f"{provider:10} warm-up 128 MiB: {before / 1024:6.1f} -> {rss_kib(pid) / 1024:6.1f}"
            )
            start = rss_kib(pid)
            sampler = Sampler(pid)
            sampler.start()
            began = time.perf_counter()
            outcome = flow(api, base, path, size)
            seconds = time.perf_counter() - began
            samples = sampler.stop()
            end = rss_kib(pid)
            assert outcome["status"] == "uploaded", outcome
            print(
                f"{provider:10} {flow.__name__:18} {outcome['requests']:4} provider requests "
                f"in {seconds:6.1f} s: start {start / 1024:6.1f}, peak {max(samples) / 1024:6.1f}, "
                f"end {end / 1024:6.1f} (growth {(max(samples) - start) / 1024:+.1f}; "
                f"{len(samples)} samples)"
            )
    except BaseException:
        log.flush()
        print((tmp / "gunicorn.log").read_text(errors="replace")[-3000:], file=sys.stderr)
        raise
    finally:
        os.killpg(proc.pid, 3)  # SIGQUIT: gunicorn's quick shutdown, our own process group
        proc.wait(timeout=60)
        log.close()
        standin.stop()
        moto.stop()
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()
