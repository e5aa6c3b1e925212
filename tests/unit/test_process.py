"""Process tuning for the service processes."""

from __future__ import annotations

import gc

from serve_app.process import GC_THRESHOLDS, tune_gc


def test_tune_gc_freezes_startup_objects_and_raises_thresholds() -> None:
    before = gc.get_threshold()
    try:
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS
        assert gc.get_freeze_count() > 1000  # modules and everything imported so far
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
