"""`essaycoach run` as a small supervisor: the driver (Ray, Serve, the essay hosts) runs as its
child in a session of its own, and nothing of the run outlives the supervisor's stop.

- SIGINT, SIGTERM and SIGHUP are forwarded to the driver as SIGTERM (it flushes every essay host,
  then ends the local Ray cluster); a second signal, or `ESSAYCOACH_SHUTDOWN_SECONDS` after the
  first, kills what is left.
- When the driver has exited, every process still in its session (Ray workers, a HAProxy
  re-parented to init) and every recorded HAProxy process is ended, then the run's files are
  removed and its lock released.
- If the supervisor itself is killed hard, the driver gets SIGTERM from the kernel
  (PR_SET_PDEATHSIG) and stops within its own deadline; the next start cleans up the rest
  (`serve_app.run_record`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import time
from collections.abc import Mapping
from types import FrameType

from serve_app import processes
from serve_app.haproxy_launcher import end_recorded
from serve_app.run_record import RunFiles, RunRecord

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
PR_SET_PDEATHSIG = 1


def die_with_parent(sig: signal.Signals = signal.SIGTERM) -> None:
    """Ask the kernel to send `sig` to this process when its parent dies."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def supervise(command: list[str], *, env: Mapping[str, str], files: RunFiles, lock_fd: int, http: str,
              shutdown_seconds: float) -> int:
    """Run `command` (the driver) until it exits and clean up after it; returns its exit status."""
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)

    for sig in STOP_SIGNALS:
        signal.signal(sig, on_signal)
    driver = subprocess.Popen(command, env=dict(env), start_new_session=True, pass_fds=(lock_fd,),
                              preexec_fn=die_with_parent)
    me, child = processes.current(os.getpid()), processes.current(driver.pid)
    assert me is not None and child is not None  # our own process and our unreaped child
    files.write(RunRecord(supervisor_pid=me.pid, supervisor_start=me.start_time, driver_pid=child.pid,
                          driver_start=child.start_time, session=driver.pid, http=http, started_at=time.time()))
    try:
        status = _wait(driver, received, shutdown_seconds)
    finally:
        _end_run(driver, files)
    return status


def _wait(driver: subprocess.Popen[bytes], received: list[int], shutdown_seconds: float) -> int:
    seen = 0
    kill_at: float | None = None
    while True:
        try:
            return driver.wait(timeout=0.1)
        except subprocess.TimeoutExpired:
            pass
        if len(received) > seen:
            seen = len(received)
            if kill_at is None:
                print(f"essaycoach: stopping (flushing essays; at most {shutdown_seconds:g} s, "
                      "ESSAYCOACH_SHUTDOWN_SECONDS)", flush=True)
                kill_at = time.monotonic() + shutdown_seconds
                _signal(driver, signal.SIGTERM)
            else:
                kill_at = time.monotonic()  # a second Ctrl-C: stop now
        if kill_at is not None and time.monotonic() >= kill_at:
            print("essaycoach: the stop did not finish in time; killing what is left", flush=True)
            processes.end_session(driver.pid, grace=0)
            return driver.wait()


def _end_run(driver: subprocess.Popen[bytes], files: RunFiles) -> None:
    if driver.poll() is None:
        processes.end_session(driver.pid, grace=0)
        driver.wait()
    # Ray's workers end on their own once the raylet is gone; a short grace lets them.
    left = processes.end_session(driver.pid, grace=2.0) + end_recorded(files.run_dir)
    if left:
        print(f"essaycoach: ended {left} process(es) the run left behind", flush=True)
    files.forget()


def _signal(driver: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    try:
        driver.send_signal(sig)
    except ProcessLookupError:
        pass
