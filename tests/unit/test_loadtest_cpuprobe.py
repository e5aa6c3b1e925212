"""The loadtest's machine probe (ops/loadtest/cpuprobe.py): the calibration loop's CPU time while
the window runs, and the share of the window with a task waiting for a core."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from ops.loadtest import cpuprobe, run


def test_probe_scales_the_loops_cpu_time_to_the_calibrations_iterations(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter([10.0, 10.006])  # 6 ms of CPU for the probe's 200,000 iterations
    monkeypatch.setattr(cpuprobe.time, "thread_time", lambda: next(ticks))
    assert cpuprobe.probe_once(200_000) == pytest.approx(30.0)


def test_pressure_reads_the_some_line_total(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    psi = tmp_path / "cpu"
    psi.write_text("some avg10=1.00 avg60=0.50 avg300=0.10 total=123456\nfull avg10=0.00 avg60=0.00 avg300=0.00 total=0\n")
    monkeypatch.setattr(cpuprobe, "PRESSURE", psi)
    assert cpuprobe.pressure_some_us() == 123456
    monkeypatch.setattr(cpuprobe, "PRESSURE", tmp_path / "absent")
    assert cpuprobe.pressure_some_us() is None


def test_probe_process_samples_until_stopped() -> None:
    probe = cpuprobe.Probe(interval=0.05)
    probe.start()
    time.sleep(2.0)  # the child's first sample comes right after its start; 2 s leave room on a loaded machine
    result = probe.stop()
    assert probe.proc is not None and probe.proc.returncode is not None  # ended by SIGTERM, not left running
    assert result["samples"] >= 1
    assert result["cpu_ms_p50"] > 0 and result["cpu_ms_max"] >= result["cpu_ms_p50"]
    if cpuprobe.pressure_some_us() is not None:
        assert 0.0 <= result["cpu_wait_fraction"] <= 2.0  # PSI and our wall clock are sampled apart


def test_report_line_names_the_windows_speed_and_saturation() -> None:
    line = run.during_window({"cpu_ms_p50": 29.5, "cpu_ms_max": 41.0, "samples": 60, "cpu_wait_fraction": 0.42})
    assert "29.5 ms of CPU p50, 41.0 max (60 samples)" in line
    assert "0.42 of the time" in line
    assert run.during_window(None) == "" and run.during_window({"samples": 0}) == ""
