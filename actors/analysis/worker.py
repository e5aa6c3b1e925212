"""A warm rules-worker process: big local-analysis jobs run outside the host process's GIL.

A 200,000-character essay's rules take ~0.2 s of CPU. On a worker thread of the host they still
shared the GIL with the host's event loop, and another essay's acks waited 70-374 ms
(ops/loadtest/ANCHOR_RESULTS.md). `RulesWorker` keeps one child process per host process
(`python -m actors.analysis.worker`, started at once so its dictionary is loaded before the first
job) and sends it big jobs only: the IPC (pickling the text and the items) costs more than the
rules for a paragraph or two.

Protocol: length-prefixed pickles (4-byte big-endian length) over the child's stdin and stdout,
one job at a time, each answered ``("ok", result)`` or ``("error", traceback text)``. Pickle is
safe here: both ends are this code base, nothing else writes to the pipes.

Lifetime: the child exits when its stdin closes (the parent closed it or died) and, should a
job be running then, when its parent process changes (checked every 0.2 s); `close()` kills it.
A crashed child is restarted and the job retried once; `WorkerFailed` after that. A job that
raises in the child is `WorkerJobError` (the child goes on). On either the engine runs the job
in-process once (`AnalysisEngine.analyze_changed`).

The child runs the jobs of `OPS`; tests start one with hooks of their own added
(`tests/rules_worker.py`, through `main(ops)`).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import IO, Any

log = logging.getLogger(__name__)

_HEADER = struct.Struct(">I")
# The directory that holds the `actors` package: the child imports it from there wherever the
# parent runs (a Ray worker's working directory need not be the checkout).
_ROOT = str(Path(__file__).resolve().parents[2])


class WorkerFailed(RuntimeError):
    """The worker died during a job twice in a row (or is closed): run the job in-process."""


class WorkerJobError(RuntimeError):
    """The job raised in the worker (the child is fine); carries the child's traceback."""


def _write(stream: IO[bytes], obj: object) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)))
    stream.write(data)
    stream.flush()


def _read_exact(stream: IO[bytes], size: int) -> bytes:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            raise EOFError("worker pipe closed")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _read(stream: IO[bytes]) -> Any:
    (size,) = _HEADER.unpack(_read_exact(stream, _HEADER.size))
    return pickle.loads(_read_exact(stream, size))


class RulesWorker:
    """The parent's end: one warm child, jobs one at a time (callers queue on a lock).

    `call` is awaitable from any event loop (the blocking pipe I/O runs on this worker's own
    thread, which waits with the GIL released; queued jobs wait in its queue, not in the loop's
    default executor, which anchors need); `call_sync` is the same from a plain thread.
    """

    def __init__(self, *, command: Sequence[str] | None = None, start: bool = True) -> None:
        self.command = list(command or [sys.executable, "-m", "actors.analysis.worker"])
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[bytes] | None = None
        self._closed = False
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="rules-worker")
        self.jobs = 0  # jobs answered by the child
        self.restarts = 0  # children started after a crash
        if start:
            with self._lock:
                self._spawn()

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _spawn(self) -> subprocess.Popen[bytes]:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (_ROOT, env.get("PYTHONPATH", "")) if p)
        self._proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                                      close_fds=True)
        return self._proc

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        for stream in (proc.stdin, proc.stdout):
            try:
                if stream is not None:
                    stream.close()
            except OSError:
                pass
        if proc.poll() is None:
            proc.kill()
        proc.wait()

    def call_sync(self, op: str, *args: Any) -> Any:
        """Run `op(*args)` in the child; restart and retry once if it dies meanwhile."""
        with self._lock:
            for attempt in (1, 2):
                if self._closed:
                    raise WorkerFailed("the rules worker is closed")
                proc = self._proc if self._proc is not None and self._proc.poll() is None else None
                if proc is None:
                    if self._proc is not None:
                        self.restarts += 1
                    self._kill()
                    proc = self._spawn()
                assert proc.stdin is not None and proc.stdout is not None
                try:
                    _write(proc.stdin, (op, args))
                    status, value = _read(proc.stdout)
                except (OSError, EOFError, pickle.UnpicklingError, struct.error) as exc:
                    log.warning("rules worker %s died during %s (attempt %d): %r", proc.pid, op, attempt, exc)
                    self._kill()
                    self.restarts += 1
                    if attempt == 1:
                        continue
                    raise WorkerFailed(f"the rules worker died twice running {op}") from exc
                self.jobs += 1
                if status != "ok":
                    raise WorkerJobError(value)
                return value
        raise AssertionError("unreachable")

    async def call(self, op: str, *args: Any) -> Any:
        if self._closed:
            raise WorkerFailed("the rules worker is closed")
        return await asyncio.get_running_loop().run_in_executor(self._thread,
                                                                functools.partial(self.call_sync, op, *args))

    def close(self) -> None:
        """Kill the child now (host stop); later calls raise `WorkerFailed`."""
        self._closed = True
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.kill()  # a job in flight fails at once instead of holding the lock
        with self._lock:
            self._kill()
        self._thread.shutdown(wait=False)  # jobs still queued find it closed (WorkerFailed)

    def __del__(self) -> None:
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


# ---------------------------------------------------------------------------------------------
# The child


def _paragraph_items(texts: Sequence[str], dictionary: Collection[str]) -> list[Any]:
    return [_child_engine().local.analyze_paragraph(text, dictionary=dictionary) for text in texts]


def _run(old_text: str, new_text: str, kwargs: dict[str, Any]) -> Any:
    """A whole run: its result, and the local results for the host's cache (`LocalResults`)."""
    engine = _child_engine()
    # The child's own engine, its own cache: a big essay's next run reuses its paragraphs here.
    return asyncio.run(engine.analyze_in_process(old_text, new_text, **kwargs))


_ENGINE: list[Any] = []


def _child_engine() -> Any:
    if not _ENGINE:
        from .engine import AnalysisEngine
        from .local import LocalAnalyzer

        # Everything on this process's own thread: no other essays wait on it here.
        _ENGINE.append(AnalysisEngine(LocalAnalyzer(), offload_chars=sys.maxsize))
    return _ENGINE[0]


OPS: Mapping[str, Callable[..., Any]] = {
    "paragraphs": _paragraph_items,
    "run": _run,
    # A round trip that names the child answering it: starts and warms a worker
    # (ops/loadtest/anchor_bench.py) and tells a restarted child from the one before.
    "pid": os.getpid,
}


def _watch_parent(parent: int) -> None:
    """Exit when the parent process is gone (it died mid-job, so stdin's EOF is not read yet)."""
    while True:
        time.sleep(0.2)
        if os.getppid() != parent:
            os._exit(0)


def main(ops: Mapping[str, Callable[..., Any]] = OPS) -> None:
    """The child's loop: read a job, run `ops[name](*args)`, answer, until stdin closes."""
    parent = os.getppid()
    # Ctrl-C at `essaycoach run` reaches the whole process group: the host stops, and we with it
    # (our stdin closes), without a KeyboardInterrupt traceback of our own in its log.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The protocol owns the real stdout; anything printed goes to stderr (the host's log).
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = os.fdopen(os.dup(0), "rb")
    threading.Thread(target=_watch_parent, args=(parent,), daemon=True, name="parent-watch").start()
    from .local import spellchecker

    spellchecker()  # warm: the dictionary loads before the first job, not during it
    _child_engine()
    import gc

    gc.collect()
    gc.freeze()  # the dictionary's millions of objects out of every later collection
    while True:
        try:
            op, args = _read(inp)
        except EOFError:
            return  # the parent closed our stdin or died
        try:
            reply: tuple[str, Any] = ("ok", ops[op](*args))
        except Exception:
            reply = ("error", traceback.format_exc())
        _write(out, reply)


if __name__ == "__main__":
    main()
