"""The processes of one run, found through /proc (Linux): by session, or by a recorded pid.

`essaycoach run` starts its driver in a new session; every process the run starts (Ray's GCS and
raylet, each worker in its own process group, Serve's HAProxy re-parented to init after its
manager died) stays in that session, so the session id finds them all. A pid is recorded with its
start time, so a pid the kernel has since given to another process is never signalled. Only
processes of the calling user are ever listed.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

PROC = "/proc"


@dataclass(frozen=True)
class ProcessRef:
    """A process as it was when recorded: `start_time` (clock ticks after boot, /proc stat field
    22) tells it apart from a later process given the same pid."""

    pid: int
    start_time: int

    def to_line(self) -> str:
        return f"{self.pid} {self.start_time}"

    @classmethod
    def from_line(cls, line: str) -> ProcessRef | None:
        parts = line.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts):
            return None
        return cls(int(parts[0]), int(parts[1]))


@dataclass(frozen=True)
class ProcessInfo:
    """What /proc/<pid>/stat says about a live process."""

    ref: ProcessRef
    state: str
    ppid: int
    pgid: int
    session: int


def parse_stat(pid: int, stat: str) -> ProcessInfo:
    """Parse /proc/<pid>/stat; the command name may hold spaces and parentheses, so fields are
    counted after its last ')'."""
    fields = stat[stat.rindex(")") + 2:].split()
    # fields[0] is field 3 (state); field 22 (starttime) is fields[19].
    return ProcessInfo(ProcessRef(pid, int(fields[19])), fields[0], int(fields[1]), int(fields[2]),
                       int(fields[3]))


def info(pid: int) -> ProcessInfo | None:
    """The process `pid` if it exists, belongs to this user and is not a zombie."""
    try:
        if os.stat(f"{PROC}/{pid}").st_uid != os.getuid():
            return None
        with open(f"{PROC}/{pid}/stat") as f:
            found = parse_stat(pid, f.read())
    except (OSError, ValueError, IndexError):
        return None
    return None if found.state in ("Z", "X") else found


def current(pid: int) -> ProcessRef | None:
    found = info(pid)
    return found.ref if found is not None else None


def is_alive(ref: ProcessRef) -> bool:
    return current(ref.pid) == ref


def command_line(pid: int) -> list[str]:
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as f:
            return [part.decode(errors="replace") for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def session_members(session: int, *, exclude: frozenset[int] = frozenset()) -> list[ProcessRef]:
    """This user's live processes in `session` (the leader included), except `exclude`."""
    members = []
    for entry in os.listdir(PROC):
        if not entry.isdigit() or int(entry) in exclude:
            continue
        found = info(int(entry))
        if found is not None and found.session == session:
            members.append(found.ref)
    return members


def signal_all(refs: list[ProcessRef], sig: signal.Signals) -> None:
    # The start time is checked just before each signal: a pid reused since it was listed is spared.
    for ref in refs:
        if is_alive(ref):
            try:
                os.kill(ref.pid, sig)
            except OSError:
                pass


def end(refs: list[ProcessRef], *, grace: float) -> list[ProcessRef]:
    """SIGTERM `refs`, SIGKILL what is still alive after `grace` seconds, and wait (at most 5 s)
    for them to go. Returns those still alive then (stuck in the kernel, or not ours to reap)."""
    signal_all(refs, signal.SIGTERM)
    left = _wait_gone(refs, grace)
    signal_all(left, signal.SIGKILL)
    return _wait_gone(left, 5.0)


def end_session(session: int, *, grace: float, exclude: frozenset[int] = frozenset()) -> int:
    """End every process of this user in `session` (processes may still be starting, so the
    session is listed again until it is empty). Returns how many were signalled."""
    ended: set[ProcessRef] = set()
    deadline = time.monotonic() + grace + 10
    while time.monotonic() < deadline:
        members = session_members(session, exclude=exclude)
        if not members:
            break
        ended.update(members)
        end(members, grace=max(0.0, min(grace, deadline - time.monotonic())))
    return len(ended)


def _wait_gone(refs: list[ProcessRef], seconds: float) -> list[ProcessRef]:
    deadline = time.monotonic() + seconds
    left = [r for r in refs if is_alive(r)]
    while left and time.monotonic() < deadline:
        time.sleep(0.05)
        left = [r for r in left if is_alive(r)]
    return left
