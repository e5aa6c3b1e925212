"""Process plumbing for the loadtest: start a server, measure its process tree, stop it by pid.

No psutil: everything comes from /proc. A "tree" is a root pid and all its descendants (for a local
Ray cluster started by `essaycoach run`, the GCS, raylet, every worker and Serve's HAProxy are
descendants of the driver). CPU is utime+stime; memory is VmRSS summed over the tree (shared pages
such as libraries are counted once per process, so use differences between two snapshots of the
same tree, never the absolute sum, to attribute memory to load).
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from serve_app.ports import pick_free_port as free_port  # noqa: F401 (run.py and web_perf.py use procs.free_port)

CLK_TCK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcStat:
    pid: int
    ppid: int
    start: int  # starttime in clock ticks since boot: (pid, start) names one process across pid reuse
    cpu_ticks: int  # utime + stime
    comm: str


def _read_stat(pid: int) -> ProcStat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm is in parentheses and may contain spaces; fields after it are space separated.
    lpar, rpar = raw.index("("), raw.rindex(")")
    rest = raw[rpar + 2 :].split()
    # rest[0] is field 3 (state); utime is field 14, stime 15, starttime 22.
    return ProcStat(pid=pid, ppid=int(rest[1]), start=int(rest[19]),
                    cpu_ticks=int(rest[11]) + int(rest[12]), comm=raw[lpar + 1 : rpar])


def _name(st: ProcStat) -> str:
    """A readable process name: Ray workers retitle their argv (`ray::ServeReplica:app:Gateway`)."""
    try:
        raw = Path(f"/proc/{st.pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return st.comm
    if raw.startswith("ray::"):
        # the title follows the running task (`ray::EssayHostShell.call`): keep the actor/replica name
        return raw.split(" ")[0].split(".")[0][:60]
    return st.comm


def _rss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        pass
    return 0


def tree(root: int) -> list[ProcStat]:
    """The root process and every live descendant."""
    stats: dict[int, ProcStat] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _read_stat(int(entry))
            if st is not None:
                stats[st.pid] = st
    if root not in stats:
        return []
    children: dict[int, list[int]] = {}
    for st in stats.values():
        children.setdefault(st.ppid, []).append(st.pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(stats[pid])
        todo.extend(children.get(pid, ()))
    return out


@dataclass
class TreeSnapshot:
    at: float
    cpu: dict[tuple[int, int], int]  # (pid, start) -> cpu ticks
    rss_kib: int
    procs: int
    by_comm: dict[str, int] = field(default_factory=dict)  # comm -> RSS KiB, for the report
    comm: dict[tuple[int, int], str] = field(default_factory=dict)
    count_by_name: dict[str, int] = field(default_factory=dict)

    def cpu_seconds_since(self, earlier: TreeSnapshot) -> float:
        """CPU seconds the tree used between two snapshots (processes born in between count fully)."""
        ticks = sum(t - earlier.cpu.get(key, 0) for key, t in self.cpu.items())
        return ticks / CLK_TCK

    def cpu_by_comm_since(self, earlier: TreeSnapshot) -> dict[str, float]:
        out: dict[str, float] = {}
        for key, t in self.cpu.items():
            name = self.comm.get(key, "?")
            out[name] = out.get(name, 0.0) + (t - earlier.cpu.get(key, 0)) / CLK_TCK
        return out


def snapshot(root: int) -> TreeSnapshot:
    procs = tree(root)
    by_comm: dict[str, int] = {}
    names: dict[tuple[int, int], str] = {}
    counts: dict[str, int] = {}
    total = 0
    for st in procs:
        rss = _rss_kib(st.pid)
        total += rss
        name = names[(st.pid, st.start)] = _name(st)
        by_comm[name] = by_comm.get(name, 0) + rss
        counts[name] = counts.get(name, 0) + 1
    return TreeSnapshot(at=time.monotonic(), cpu={(p.pid, p.start): p.cpu_ticks for p in procs},
                        rss_kib=total, procs=len(procs), by_comm=by_comm,
                        comm=names, count_by_name=counts)


def self_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def self_rss_kib() -> int:
    return _rss_kib(os.getpid())


def start(cmd: list[str], *, env: dict[str, str], cwd: str | Path, log_path: Path) -> subprocess.Popen[bytes]:
    """Start a server in its own session (so its group can be killed by pgid), logging to a file."""
    log = open(log_path, "wb")
    try:
        return subprocess.Popen(cmd, env=env, cwd=str(cwd), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    finally:
        log.close()


def stop(proc: subprocess.Popen[bytes], *, grace: float = 60.0, sig: int = signal.SIGINT) -> str:
    """Stop a server we started: `sig` to its pid, wait, then SIGKILL its group and any leftover
    descendant (by pid, checked against its start time so a reused pid is never hit)."""
    if proc.poll() is not None:
        return f"already exited ({proc.returncode})"
    family = [(st.pid, st.start) for st in tree(proc.pid) if st.pid != proc.pid]
    how = "clean"
    try:
        proc.send_signal(sig)
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        how = f"no exit after {grace:.0f}s: SIGKILL"
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == pid
        except ProcessLookupError:
            pass
        proc.wait(timeout=10)
    time.sleep(0.5)
    leftovers = 0
    deadline = time.monotonic() + 10
    for pid, start_ticks in family:
        while True:
            st = _read_stat(pid)
            if st is None or st.start != start_ticks:
                break  # gone (or the pid now names another process: not ours)
            if time.monotonic() > deadline:
                try:
                    os.kill(pid, signal.SIGKILL)
                    leftovers += 1
                except ProcessLookupError:
                    pass
                break
            time.sleep(0.2)
    if leftovers:
        how += f"; SIGKILLed {leftovers} leftover descendant(s)"
    return how


def machine_busy() -> tuple[float, float]:
    """(busy seconds summed over CPUs, wall monotonic) from /proc/stat, for "how busy was the box"."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    busy = sum(values[:8]) - idle  # user nice system idle iowait irq softirq steal
    return busy / CLK_TCK, time.monotonic()


def self_runqueue_wait_seconds() -> float:
    """Seconds this process's threads spent runnable but not running (scheduler starvation)."""
    total = 0
    for task in os.listdir("/proc/self/task"):
        try:
            total += int(Path(f"/proc/self/task/{task}/schedstat").read_text().split()[1])
        except (FileNotFoundError, IndexError, ValueError):
            pass
    return total / 1e9
