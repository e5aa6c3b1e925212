"""How fast the machine's cores ran during a measured window, and how long its tasks waited for one.

Two runs of the same command on the same kind of machine once differed by a third in every
process's CPU per update (ops/loadtest/RESULTS.md, Rerun 40 against 36): the server, HAProxy and
the load generator alike, with no steal in /proc/stat and a normal calibration at the start. A
calibration taken once before the run cannot tell a machine that slowed down during the window
(a neighbour on the same physical cores, a lower clock) from code that got slower. So while the
window runs, a separate process runs the calibration loop once a second and records the loop's
own CPU time (`time.thread_time`: time on a core, not time waiting for one), scaled to the
calibration's million iterations so the two compare directly. Its cost: ~6 ms of one core a
second (0.3% of the machine).

Beside it, Linux's pressure-stall information (`/proc/pressure/cpu`, `some`): the share of the
window in which at least one runnable task waited for a core, i.e. whether the two cores were
saturated.
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import time
from pathlib import Path

CALIBRATION_ITERATIONS = 1_000_000
PROBE_ITERATIONS = 200_000
PRESSURE = Path("/proc/pressure/cpu")


def fixed_loop(iterations: int) -> int:
    """The calibration's work: a plain Python loop, the same bytecode on every machine."""
    total = 0
    for i in range(iterations):
        total += i
    return total


def probe_once(iterations: int = PROBE_ITERATIONS) -> float:
    """CPU ms the fixed loop took on a core, per `CALIBRATION_ITERATIONS` iterations."""
    start = time.thread_time()
    fixed_loop(iterations)
    return (time.thread_time() - start) * 1000 * CALIBRATION_ITERATIONS / iterations


def pressure_some_us() -> int | None:
    """Total µs since boot in which some runnable task waited for a CPU; None without PSI."""
    try:
        for line in PRESSURE.read_text().splitlines():
            if line.startswith("some "):
                return int(line.rsplit("total=", 1)[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


class Probe:
    """The probe process for one window: `start()` at the window's start, `stop()` at its end."""

    def __init__(self, interval: float = 1.0) -> None:
        self.interval = interval
        self.proc: subprocess.Popen[str] | None = None
        self.pressure0: int | None = None
        self.started = 0.0

    def start(self) -> None:
        self.pressure0, self.started = pressure_some_us(), time.monotonic()
        self.proc = subprocess.Popen([sys.executable, "-m", "ops.loadtest.cpuprobe", "--interval", str(self.interval)],
                                     stdout=subprocess.PIPE, text=True)

    def stop(self) -> dict[str, float | int | None]:
        """The window's probe samples summarised (ms of CPU per calibration loop: p50, max, count)
        and the fraction of it with a task waiting for a core."""
        wall = time.monotonic() - self.started
        pressure1 = pressure_some_us()
        samples: list[float] = []
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            out, _ = self.proc.communicate(timeout=10)
            samples = sorted(float(line) for line in out.split())
        waited = (None if self.pressure0 is None or pressure1 is None or wall <= 0
                  else round((pressure1 - self.pressure0) / 1e6 / wall, 3))
        return {"cpu_ms_p50": round(samples[len(samples) // 2], 1) if samples else None,
                "cpu_ms_max": round(samples[-1], 1) if samples else None,
                "samples": len(samples), "cpu_wait_fraction": waited}


def main() -> None:
    ap = argparse.ArgumentParser(description="print the calibration loop's CPU ms once per interval until SIGTERM")
    ap.add_argument("--interval", type=float, default=1.0)
    args = ap.parse_args()
    stopping = False

    def stop(_signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    while not stopping:
        print(round(probe_once(), 2), flush=True)
        time.sleep(args.interval)


if __name__ == "__main__":
    main()
