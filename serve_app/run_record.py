"""One live `essaycoach run` per var directory: `var/run.lock` (an flock held by the supervisor
and its driver) and `var/run.json` (who the run is, so the next start can find what a run killed
hard left behind).

The lock is released by the kernel when the last process holding it ends, so a held lock means a
live run and a free lock with a `run.json` means a predecessor that never cleaned up.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from serve_app import processes
from serve_app.haproxy_launcher import end_recorded


class RunRefused(SystemExit):
    """Another run owns this var directory; the message is one line for the operator."""


@dataclass(frozen=True)
class RunRecord:
    """The live run of a var directory, as written to `run.json`."""

    supervisor_pid: int
    supervisor_start: int
    driver_pid: int
    driver_start: int
    # The driver is its session's leader: every process of the run is in this session.
    session: int
    http: str
    started_at: float


@dataclass
class RunFiles:
    """The run files of one var directory: `run.lock`, `run.json` and `run/` (HAProxy launcher)."""

    var_dir: Path

    @property
    def lock_path(self) -> Path:
        return self.var_dir / "run.lock"

    @property
    def record_path(self) -> Path:
        return self.var_dir / "run.json"

    @property
    def run_dir(self) -> Path:
        return self.var_dir / "run"

    def read(self) -> RunRecord | None:
        try:
            return RunRecord(**json.loads(self.record_path.read_text()))
        except (FileNotFoundError, ValueError, TypeError):
            return None

    def write(self, record: RunRecord) -> None:
        tmp = self.record_path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, self.record_path)

    def forget(self) -> None:
        self.record_path.unlink(missing_ok=True)


@dataclass(frozen=True)
class RunLock:
    """The run lock of a var directory, held: `fd` (keep it open, pass it to the driver), and
    whether a predecessor that did not stop was cleaned up after (its record or processes were
    found, under the lock): what it ended can hold its ports a moment longer."""

    fd: int
    predecessor: bool


def acquire(files: RunFiles, *, wait_seconds: float) -> RunLock:
    """Take the run lock of `files.var_dir` and clean up after a predecessor that died without
    stopping.

    A live predecessor whose supervisor is gone (killed hard while its driver drains) is waited
    for up to `wait_seconds`, then ended. A live predecessor with its supervisor refuses the start.
    """
    files.var_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(files.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        if not _try_lock(fd):
            _wait_for_orphan(files, fd, wait_seconds)
        predecessor, ended = clean_up(files)
        if ended:
            print(f"essaycoach: ended {ended} process(es) left by a previous run that did not stop", flush=True)
        return RunLock(fd, predecessor)
    except BaseException:
        os.close(fd)
        raise


def clean_up(files: RunFiles) -> tuple[bool, int]:
    """End what the run recorded in `files` left (its session, its HAProxy processes) and forget
    it. Only for a run that no longer holds the lock. Returns whether it left anything (a
    record, or recorded processes still running) and how many processes were ended."""
    record = files.read()
    ended = end_recorded(files.run_dir)
    if record is not None:
        ended += _end_session(record)
    files.forget()
    return record is not None or ended > 0, ended


def _end_session(record: RunRecord) -> int:
    leader = processes.current(record.session)
    if leader is not None and leader.start_time != record.driver_start:
        return 0  # the session id is a reused pid: that session is not the run's
    return processes.end_session(record.session, grace=2.0)


def _try_lock(fd: int) -> bool:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except BlockingIOError:
        return False


def _wait_for_orphan(files: RunFiles, fd: int, wait_seconds: float) -> None:
    record = files.read()
    where = files.var_dir
    if record is None:
        raise RunRefused(f"essaycoach: another `essaycoach run` is starting with {where}; "
                         "stop it or give this one its own ESSAYCOACH_VAR_DIR")
    supervisor = processes.ProcessRef(record.supervisor_pid, record.supervisor_start)
    if processes.is_alive(supervisor):
        raise RunRefused(f"essaycoach: another `essaycoach run` (pid {record.supervisor_pid}, "
                         f"http://{record.http}) is serving with {where}; stop it "
                         f"(kill -TERM {record.supervisor_pid}) or give this one its own ESSAYCOACH_VAR_DIR")
    print(f"essaycoach: waiting up to {wait_seconds:g} s for the previous run's driver "
          f"(pid {record.driver_pid}) to finish stopping", flush=True)
    deadline = time.monotonic() + wait_seconds
    while time.monotonic() < deadline:
        if _try_lock(fd):
            return
        time.sleep(0.2)
    _end_session(record)  # its supervisor is dead and it overran its deadline: it is ours to end
    deadline = time.monotonic() + 10
    while not _try_lock(fd):
        if time.monotonic() > deadline:
            raise RunRefused(f"essaycoach: the previous run's driver (pid {record.driver_pid}) holds "
                             f"{files.lock_path} and does not end; end it, then start again")
        time.sleep(0.2)
