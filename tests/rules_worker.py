"""A rules-worker child with test hooks: `python -m tests.rules_worker [--failing]`.

The production child (`actors.analysis.worker`) runs only `OPS`; tests start this one through
`RulesWorker(command=...)` to crash it on purpose, or (`--failing`) to make every analysis job
raise in it, as a bug in the worker's side would.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from actors.analysis import worker

COMMAND = [sys.executable, "-m", "tests.rules_worker"]


def crash_once(marker: str) -> int:
    """Kill this child unless `marker` exists (creating it first), so the parent's restart and
    retry can be seen; the retry answers the new child's pid."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(70)
    return os.getpid()


def failing(*args: Any) -> Any:
    raise RuntimeError("a bug in the rules worker's job")


if __name__ == "__main__":
    ops = {**worker.OPS, "crash_once": crash_once}
    if "--failing" in sys.argv[1:]:
        ops.update(run=failing, paragraphs=failing)
    worker.main(ops)
