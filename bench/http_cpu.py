"""Where the deployed path's CPU goes: per process, and gunicorn's kernel time per system call.

`bench/http_presign.py` gives the ratios from /proc totals. This one splits the CPU of each
endpoint per request, from perf's system-wide `cpu-clock` samples (a software event, so a VM
without hardware counters samples too) while wrk drives it: gunicorn's user space and kernel
time (by the system call or interrupt each sample ran under), PostgreSQL, Redis, wrk, and the
time the cores sat idle. Same server, settings, users and wrk script as http_presign.py; the
rounds are the floor, the floor plus one Redis round trip (`/bench/floor-redis/`), presign with
S3 then Cloudinary active, and the floor plus presign's audit line (`/bench/floor-log/`), with a
floor round between them.

    .venv/bin/python bench/http_cpu.py    # make bench-cpu, about 2 minutes

Needs perf (Debian: apt-get install linux-perf) allowed to sample the whole machine: root, or
kernel.perf_event_paranoid <= 0. perf's samples say where time went; its totals carry the
sampling error of ~10 000 samples per round (about 1 %).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench import http_presign as hp  # noqa: E402

SECONDS = int(os.environ.get("BENCH_SECONDS", "8"))
FREQUENCY = 999  # samples per second per core
PERF_RECORD = ("perf", "record", "-a", "-g", "-e", "cpu-clock", "-F", str(FREQUENCY))
ROUNDS = ("floor", "floor-redis", "s3", "floor", "cloudinary", "floor", "floor-log", "floor")
# The printed columns, in this order (http_presign.py's labels).
COLUMNS = ("floor", "floor-redis", "floor-log", "s3", "cloudinary")
# The other processes' rows: process name (perf's comm; swapper is the idle task), label.
PROCESSES = {"postgres": "PostgreSQL", "redis-server": "Redis", "wrk": "wrk", "swapper": "idle"}
# The outermost kernel frame of a sample that is not under a system call.
ENTRIES = {
    "asm_sysvec_reschedule_ipi": "reschedule IPI (a wake-up)",
    "asm_common_interrupt": "device interrupt",
    "asm_sysvec_apic_timer_interrupt": "timer interrupt",
    "asm_exc_page_fault": "page fault",
    "entry_SYSCALL_64_after_hwframe": "system call entry and exit",
}


def _perf_allowed() -> str | None:
    if not shutil.which("perf"):
        return "perf is not installed (Debian: apt-get install linux-perf)"
    if os.geteuid() != 0:
        paranoid = Path("/proc/sys/kernel/perf_event_paranoid").read_text().strip()
        if int(paranoid) > 0:
            return f"perf may not sample the whole machine (perf_event_paranoid={paranoid})"
    return None


def _kind(frames: list[tuple[str, str]]) -> str:
    """What a gunicorn sample was doing: 'user', or the kernel's system call / interrupt."""
    if not frames or "kernel" not in frames[0][1]:
        return "user"
    for symbol, _ in frames:
        if symbol.startswith(("__x64_sys_", "__do_sys_")):
            return symbol.split("_sys_", 1)[1]
    outermost = [symbol for symbol, dso in frames if "kernel" in dso][-1]
    return ENTRIES.get(outermost, "kernel, other")


def _samples(data: Path) -> tuple[Counter[str], Counter[str]]:
    """Samples per process name, and gunicorn's samples per kind (`_kind`)."""
    out = subprocess.run(
        ["perf", "script", "-i", str(data), "-F", "comm,ip,sym,dso"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    by_process: Counter[str] = Counter()
    gunicorn: Counter[str] = Counter()
    for block in out.split("\n\n"):
        lines = block.strip("\n").split("\n")
        if not lines or not lines[0].strip():
            continue
        comm = lines[0].strip()
        by_process[comm] += 1
        if comm == "gunicorn":
            frames = []
            for line in lines[1:]:
                parts = line.strip().split(" ", 1)
                if len(parts) == 2:
                    symbol, _, dso = parts[1].rpartition(" (")
                    frames.append((symbol.split("+")[0], dso))
            gunicorn[_kind(frames)] += 1
    return by_process, gunicorn


def _round(name: str, script: Path, workdir: Path) -> tuple[int, Counter[str], Counter[str]]:
    if name in hp.PROVIDERS:  # as http_presign's rounds: the floor runs with either active
        hp._use_provider(name)
    url = f"http://127.0.0.1:{hp.PORT}{hp.PATHS[name]}"
    wrk = ["wrk", f"-t{hp.THREADS}", f"-c{hp.CONNECTIONS}", "-s", str(script), url]
    subprocess.run([*wrk, "-d2s"], capture_output=True, check=True)  # warm-up
    data = workdir / f"{name}.data"
    # perf runs wrk as its workload: the machine is sampled for exactly wrk's run.
    result = subprocess.run(
        [*PERF_RECORD, "-o", str(data), "--", *wrk, f"-d{SECONDS}s"],
        capture_output=True,
        text=True,
        check=True,
    )
    match = re.search(r"(\d+) requests in", result.stdout)
    if match is None or "Non-2xx" in result.stdout:
        raise SystemExit(f"{name}: wrk did not report clean answers:\n{result.stdout}")
    by_process, gunicorn = _samples(data)
    data.unlink()
    return int(match.group(1)), by_process, gunicorn


def main() -> None:
    refused = _perf_allowed() or (None if shutil.which("wrk") else "wrk is not installed")
    if refused:
        raise SystemExit(refused)
    hp._ensure_database()
    hp._setup_django()
    tokens = hp._prepare()
    workdir, script = hp.wrk_workdir("bench-cpu-", tokens)
    proc = hp.start_gunicorn(workdir)
    totals: dict[str, list[tuple[int, Counter[str], Counter[str]]]] = {}
    try:
        hp._wait_for_server(proc)
        time.sleep(2)
        for name in ROUNDS:
            totals.setdefault(name, []).append(_round(name, script, workdir))
    finally:
        hp.stop(proc, workdir, timeout=30)
    _print(totals)


def _print(totals: dict[str, list[tuple[int, Counter[str], Counter[str]]]]) -> None:
    per_us = 1e6 / FREQUENCY  # one sample, in microseconds of CPU

    def per_request(name: str, pick: str, key: str) -> float:
        rounds = totals[name]
        samples = sum((r[1] if pick == "process" else r[2])[key] for r in rounds)
        return samples * per_us / sum(r[0] for r in rounds)

    names = list(COLUMNS)
    print(
        f"CPU per request, us (perf cpu-clock, {FREQUENCY} Hz per core; rounds of {SECONDS} s: "
        f"{', '.join(ROUNDS)}; the floor column is its {len(totals['floor'])} rounds together)"
    )
    print(f"{'':34}" + "".join(f"{hp.LABELS[n]:>21}" for n in names))

    def row(label: str, values: list[float], fmt: str = "{:21.0f}") -> None:
        print(f"{label:34}" + "".join(fmt.format(v) for v in values))

    kinds = Counter[str]()
    for rounds in totals.values():
        for r in rounds:
            kinds.update(r[2])
    row("gunicorn, user space", [per_request(n, "kinds", "user") for n in names])
    row(
        "gunicorn, kernel",
        [sum(per_request(n, "kinds", k) for k in kinds if k != "user") for n in names],
    )
    for kind, _ in kinds.most_common():
        if kind == "user":
            continue
        values = [per_request(n, "kinds", kind) for n in names]
        if max(values) >= 3:
            row(f"  {kind}", values)
    for comm, label in PROCESSES.items():
        row(label, [per_request(n, "process", comm) for n in names])
    app = [
        per_request(n, "process", "gunicorn") + per_request(n, "process", "postgres") for n in names
    ]
    row("gunicorn + PostgreSQL x floor", [a / app[0] for a in app], "{:21.2f}")
    redis = [per_request(n, "process", "redis-server") for n in names]
    with_redis = [a + r for a, r in zip(app, redis, strict=True)]
    row("  with Redis x floor", [a / with_redis[0] for a in with_redis], "{:21.2f}")
    rps = [sum(r[0] for r in totals[n]) / (SECONDS * len(totals[n])) for n in names]
    row("req/s", rps)
    row("req/s x floor", [r / rps[0] for r in rps], "{:21.2f}")


if __name__ == "__main__":
    main()
