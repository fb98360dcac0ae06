"""backend.core.logs.BatchingStreamHandler: lines written in batches by a writer thread.

What it must keep from logging.StreamHandler: every line, in order, whole (a pipe shared by
several processes gets no torn line), warnings at once, nothing lost at a normal exit, and no
line written twice or lost across a fork (gunicorn preloads, then forks its workers).
"""

from __future__ import annotations

import io
import logging
import select
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from backend.core.logs import BatchingStreamHandler

ROOT = Path(__file__).resolve().parents[2]


class Recording(io.StringIO):
    """A stream that keeps each write() apart, and the thread that made it."""

    def __init__(self) -> None:
        super().__init__()
        self.writes: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    def write(self, text: str) -> int:
        with self.lock:
            self.writes.append((threading.current_thread().name, text))
        return super().write(text)

    def lines(self) -> list[str]:
        with self.lock:
            return "".join(text for _, text in self.writes).splitlines()


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger(f"test.batching.{time.monotonic_ns()}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    yield log
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def attach(logger: logging.Logger, **options: object) -> tuple[BatchingStreamHandler, Recording]:
    stream = Recording()
    handler = BatchingStreamHandler(stream, **options)  # type: ignore[arg-type]
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.addHandler(handler)
    return handler, stream


def wait_for(predicate: object, seconds: float = 5.0) -> None:
    deadline = time.monotonic() + seconds
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("not within the time")
        time.sleep(0.01)


def test_info_lines_are_written_later_by_the_writer_thread_in_one_write(
    logger: logging.Logger,
) -> None:
    _handler, stream = attach(logger, interval=0.05)
    for i in range(5):
        logger.info("line %d", i)
    assert stream.writes == []  # not from the logging thread
    wait_for(lambda: len(stream.lines()) == 5)
    assert stream.lines() == [f"INFO line {i}" for i in range(5)]
    writers = {name for name, _ in stream.writes}
    assert writers == {"log-writer"}
    assert len(stream.writes) == 1  # the five lines in one write


def test_a_warning_is_written_at_once_after_the_lines_queued_before_it(
    logger: logging.Logger,
) -> None:
    handler, stream = attach(logger, interval=60)
    logger.info("first")
    logger.info("second")
    logger.warning("problem")
    assert stream.lines() == ["INFO first", "INFO second", "WARNING problem"]
    assert {name for name, _ in stream.writes} == {threading.current_thread().name}
    logger.info("after")
    handler.flush()
    assert stream.lines()[-1] == "INFO after"


def test_chunks_are_whole_lines_of_at_most_pipe_buf_bytes(logger: logging.Logger) -> None:
    handler, stream = attach(logger, interval=60)
    expected = []
    for i in range(200):
        text = ("é" if i % 7 == 0 else "a") * (50 + i % 150)  # some lines not ASCII
        expected.append(f"INFO {i} {text}")
        logger.info("%d %s", i, text)
    logger.info("x" * (2 * select.PIPE_BUF))  # a long line goes alone, whole
    expected.append("INFO " + "x" * (2 * select.PIPE_BUF))
    handler.flush()
    assert stream.lines() == expected
    assert len(stream.writes) > 2
    for _, text in stream.writes:
        assert text.endswith("\n")
        assert len(text.encode()) <= select.PIPE_BUF or text.count("\n") == 1


def test_capacity_wakes_the_writer_before_the_interval(logger: logging.Logger) -> None:
    _handler, stream = attach(logger, interval=60, capacity=10)
    logger.info("start the writer")
    for i in range(10):
        logger.info("line %d", i)
    wait_for(lambda: len(stream.lines()) == 11)


def test_interval_zero_writes_each_line_at_once(logger: logging.Logger) -> None:
    _handler, stream = attach(logger, interval=0)
    logger.info("now")
    assert stream.lines() == ["INFO now"]


def test_set_stream_writes_the_queued_lines_to_the_old_stream(logger: logging.Logger) -> None:
    handler, old = attach(logger, interval=60)
    logger.info("for the old stream")
    new = Recording()
    assert handler.setStream(new) is old
    logger.warning("for the new stream")
    assert old.lines() == ["INFO for the old stream"]
    assert new.lines() == ["WARNING for the new stream"]


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


PRELUDE = """
    import logging, os, sys
    from backend.core.logs import BatchingStreamHandler
    handler = BatchingStreamHandler(sys.stderr, interval=60)
    handler.setFormatter(logging.Formatter("%(process)d %(message)s"))
    logging.getLogger().addHandler(handler)
    logging.getLogger().setLevel(logging.INFO)
    log = logging.getLogger("t")
"""


def test_queued_lines_are_written_at_exit() -> None:
    result = run_python(
        PRELUDE
        + """
    for i in range(3):
        log.info("line %d", i)
    sys.exit(0)
    """
    )
    assert result.returncode == 0, result.stderr
    assert [line.split(" ", 1)[1] for line in result.stderr.splitlines()] == [
        "line 0",
        "line 1",
        "line 2",
    ]


def test_a_forked_child_writes_its_own_lines_and_not_its_parents() -> None:
    result = run_python(
        PRELUDE
        + """
    log.info("parent before the fork")  # queued when the process forks
    pid = os.fork()
    if pid == 0:
        log.info("child")
        log.warning("child warning")
        sys.exit(0)
    os.waitpid(pid, 0)
    log.info("parent after the fork")
    """
    )
    assert result.returncode == 0, result.stderr
    messages = [line.split(" ", 1)[1] for line in result.stderr.splitlines()]
    assert sorted(messages) == sorted(
        ["parent before the fork", "child", "child warning", "parent after the fork"]
    ), result.stderr
    pids = {line.split(" ", 1)[1]: line.split(" ", 1)[0] for line in result.stderr.splitlines()}
    assert pids["child"] == pids["child warning"] != pids["parent before the fork"]


class Broken(io.StringIO):
    def write(self, text: str) -> int:
        raise OSError("the stream is gone")


def test_a_broken_stream_is_reported_not_raised_and_the_writer_lives_on(
    logger: logging.Logger, monkeypatch: pytest.MonkeyPatch
) -> None:
    reports = io.StringIO()
    monkeypatch.setattr(sys, "stderr", reports)
    handler = BatchingStreamHandler(Broken(), interval=0.02)  # type: ignore[arg-type]
    logger.addHandler(handler)
    logger.warning("lost at once")  # written by this thread: not raised here
    logger.info("lost later")
    wait_for(lambda: reports.getvalue().count("the stream is gone") >= 2)
    good = Recording()
    handler.setStream(good)
    logger.info("written again")
    wait_for(lambda: good.lines() == ["written again"])
