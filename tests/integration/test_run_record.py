"""One run per var directory, and what a run killed hard left behind, with real processes (no Ray):
the next start ends the dead run's session and its recorded HAProxy pids, spares a reused pid, and
refuses while a live run owns the directory."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from serve_app import processes
from serve_app.haproxy_launcher import PIDS_FILE
from serve_app.run_record import RunFiles, RunRecord, RunRefused, acquire


def _spawn(argv: list[str], **kwargs: object) -> tuple[subprocess.Popen[bytes], processes.ProcessRef]:
    proc = subprocess.Popen(argv, **kwargs)  # type: ignore[call-overload]
    ref = processes.current(proc.pid)
    assert ref is not None
    return proc, ref


def _dead_ref() -> processes.ProcessRef:
    proc, ref = _spawn(["sleep", "30"])
    proc.kill()
    proc.wait()
    return ref


def _record(files: RunFiles, driver: processes.ProcessRef, supervisor: processes.ProcessRef) -> None:
    files.write(RunRecord(supervisor_pid=supervisor.pid, supervisor_start=supervisor.start_time,
                          driver_pid=driver.pid, driver_start=driver.start_time, session=driver.pid,
                          http="127.0.0.1:8000", started_at=time.time()))


def test_a_start_ends_what_a_run_killed_hard_left_and_spares_reused_pids(tmp_path: Path) -> None:
    files = RunFiles(tmp_path / "var")
    files.run_dir.mkdir(parents=True)
    # The dead run's driver session: a leader and a member started by it (as Ray's processes are).
    driver, driver_ref = _spawn(["sh", "-c", "sleep 300 & wait"], start_new_session=True)
    deadline = time.monotonic() + 5
    while len(processes.session_members(driver.pid)) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    members = processes.session_members(driver.pid)
    assert len(members) == 2
    # Its HAProxy, re-parented and in a session of its own; and a recorded pid now reused.
    haproxy_bin = tmp_path / "haproxy"
    haproxy_bin.symlink_to("/bin/sleep")
    haproxy, haproxy_ref = _spawn([str(haproxy_bin), "300"], start_new_session=True)
    bystander, bystander_ref = _spawn([str(haproxy_bin), "300"], start_new_session=True)
    (files.run_dir / PIDS_FILE).write_text(
        f"{haproxy_ref.to_line()}\n{bystander_ref.pid} {bystander_ref.start_time + 1}\n")
    _record(files, driver_ref, supervisor=_dead_ref())
    try:
        lock = acquire(files, wait_seconds=1)
        os.close(lock.fd)
        assert lock.predecessor
        assert not any(processes.is_alive(r) for r in [*members, haproxy_ref])
        assert processes.is_alive(bystander_ref)
        assert files.read() is None
    finally:
        for proc in (driver, haproxy, bystander):
            proc.kill()
            proc.wait()


def test_a_start_is_refused_in_one_line_while_a_live_run_owns_the_directory(tmp_path: Path) -> None:
    files = RunFiles(tmp_path / "var")
    lock = acquire(files, wait_seconds=1)
    assert not lock.predecessor  # a first start: nobody before it
    me = processes.current(os.getpid())
    assert me is not None
    _record(files, driver=me, supervisor=me)
    try:
        with pytest.raises(RunRefused) as refused:
            acquire(files, wait_seconds=1)
        assert str(refused.value) == (
            f"essaycoach: another `essaycoach run` (pid {me.pid}, http://127.0.0.1:8000) is serving with "
            f"{files.var_dir}; stop it (kill -TERM {me.pid}) or give this one its own ESSAYCOACH_VAR_DIR")
    finally:
        os.close(lock.fd)
    assert processes.is_alive(me)


def test_a_start_after_a_clean_stop_finds_no_predecessor(tmp_path: Path) -> None:
    files = RunFiles(tmp_path / "var")
    first = acquire(files, wait_seconds=1)
    me = processes.current(os.getpid())
    assert me is not None
    _record(files, driver=me, supervisor=me)
    files.forget()  # the supervisor's clean stop
    os.close(first.fd)
    second = acquire(files, wait_seconds=1)
    os.close(second.fd)
    assert not second.predecessor


def test_a_driver_still_draining_after_its_supervisor_died_is_waited_for(tmp_path: Path) -> None:
    files = RunFiles(tmp_path / "var")
    files.var_dir.mkdir(parents=True)
    # The orphaned driver holds the lock (inherited from its supervisor) and exits after a moment.
    holder = subprocess.Popen(
        ["python3", "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR|os.O_CREAT); "
         "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(1.5)", str(files.lock_path)],
        stdout=subprocess.PIPE, start_new_session=True)
    assert holder.stdout is not None and holder.stdout.readline() == b"locked\n"
    holder_ref = processes.current(holder.pid)
    assert holder_ref is not None
    _record(files, holder_ref, supervisor=_dead_ref())
    lock = acquire(files, wait_seconds=30)
    os.close(lock.fd)
    assert holder.wait(timeout=5) == 0  # it finished its stop; nothing was killed
    assert lock.predecessor  # its ports may still be closing
