"""Tier 1 alone: CPU per re-analysis of an essay being typed at its end (benchmark, not a test).

`host_bench.py --shape continuous` types into essays that start empty, so within its window they
stay under ~50 words and tier 1 is a small share of the host; a class's essays run to hundreds of
words. This types real essay prose (``data/spelling/clean_*.txt``; ``--text cyrillic`` or
``mixed`` interleaves non-ASCII words) word by word onto essays of a given length and re-analyses
the settled text every ``--every`` words, as the host's scheduler does every 2 s at a word per
0.5 s, with one engine as on a host. Reported: process CPU per run (``time.process_time``; the
robust number on a shared machine) after ``--warm`` warm-up runs, of the engine alone and of the
host's whole tier-1 step (``FeedbackScheduler.analyze``: the engine, anchors, the feedback diff and
its event), typing into the essay's Yjs document.

    .venv/bin/python -m ops.loadtest.tier1_bench
    .venv/bin/python -m ops.loadtest.tier1_bench --words 100 300 600 --big 200000 --text mixed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
import uuid
from pathlib import Path
from typing import Any

from pycrdt import Doc, Text

from actors.analysis.engine import AnalysisEngine
from actors.analysis.local import LocalAnalyzer, spellchecker
from actors.broadcast import InMemoryBus
from actors.config import HostConfig
from actors.doc import EssayDoc
from actors.essay import EssayMeta, LiveEssay
from actors.events import EventLog
from actors.feedback import settled_text
from actors.scheduler import FeedbackScheduler
from ops.loadtest import corpus

PROSE_FILES = ("clean_heldout.txt", "clean_tune.txt", "clean_fresh.txt")
DATA = Path(__file__).resolve().parent / "data" / "spelling"


def prose(text: str) -> list[str]:
    """The typed words, each with the whitespace after it: the clean essays, with a word of
    `text`'s corpus after every eighth one unless `text` is latin."""
    words = re.findall(r"\S+\s*", "\n".join((DATA / name).read_text(encoding="utf-8") for name in PROSE_FILES))
    if text == "latin":
        return words
    foreign = corpus.words(text)
    return [w for i, word in enumerate(words) for w in ((word, f"{foreign[i % len(foreign)]} ") if i % 8 == 7
                                                         else (word,))]


async def essay_runs(words: list[str], start_words: int, start_chars: int, typed: int, every: int,
                     warm: int) -> dict[str, Any]:
    """CPU per tier-1 run while `typed` words are appended to an essay of `start_words` words
    (or, with `start_chars`, the prose repeated to that many characters)."""
    engine = AnalysisEngine(LocalAnalyzer())
    if start_chars:
        text = "".join(words) * (start_chars // len("".join(words)) + 1)
        text = text[: text.rfind(" ", 0, start_chars) + 1]
    else:
        text = "".join(words[:start_words])
    following = words[start_words % len(words):] + words
    old = settled_text(text)
    await engine.analyze_in_process("", old, **_kwargs())
    cpu: list[float] = []
    items = 0
    for i in range(typed):
        text += following[i]
        if (i + 1) % every:
            continue
        new = settled_text(text)
        if new == old:
            continue
        started = time.process_time()
        result, _ = await engine.analyze_in_process(old, new, **_kwargs())
        cpu.append(time.process_time() - started)
        old, items = new, len(result.items)
    return {"chars": len(old), "items": items, **_summary(cpu[warm:])}


async def host_runs(words: list[str], start_words: int, start_chars: int, typed: int, every: int,
                    warm: int) -> dict[str, Any]:
    """As `essay_runs`, through the host's tier-1 step: the words are typed into the essay's
    document (one update each) and `FeedbackScheduler.analyze` runs every `every` words."""
    async def no_usage(essay: LiveEssay, usage: Any) -> None:
        raise AssertionError("no LLM here")

    # The whole run on this loop (no offload to a thread): its CPU is what is measured.
    engine = AnalysisEngine(LocalAnalyzer(), offload_chars=10**9)
    scheduler = FeedbackScheduler(analyzer=engine, local_analyzer=None, config=HostConfig(),
                                  events=EventLog(InMemoryBus()), record_usage=no_usage, clock=time.monotonic)
    meta = EssayMeta(essay_id=uuid.uuid4(), owner_id=uuid.uuid4(), class_id=None, title="bench")
    essay = LiveEssay(meta=meta, doc=EssayDoc(), seq=0, watermark=0)
    typist = Doc()
    content = typist.get("content", type=Text)
    clock = 0.0

    def type_text(text: str) -> None:
        nonlocal clock
        before = typist.get_state()
        content.insert(len(content), text)
        clock += 0.5
        essay.apply(typist.get_update(before), now=clock, wall=0.0, large_paste_chars=10**9)

    if start_chars:
        pasted = "".join(words) * (start_chars // len("".join(words)) + 1)
        for at in range(0, pasted.rfind(" ", 0, start_chars) + 1, 5_000):
            type_text(pasted[at: min(at + 5_000, pasted.rfind(" ", 0, start_chars) + 1)])
    else:
        type_text("".join(words[:start_words]))
    await scheduler.analyze(essay, run_llm=False)
    following = words[start_words % len(words):] + words
    cpu: list[float] = []
    for i in range(typed):
        type_text(following[i])
        if (i + 1) % every:
            continue
        started = time.process_time()
        await scheduler.analyze(essay, run_llm=False)
        cpu.append(time.process_time() - started)
    return {"chars": len(essay.analyzed_text), "items": len(essay.items), **_summary(cpu[warm:])}


def _summary(cpu: list[float]) -> dict[str, Any]:
    measured = sorted(cpu)
    return {"runs": len(measured), "cpu_ms_mean": round(1000 * sum(measured) / len(measured), 3),
            "cpu_ms_median": round(1000 * measured[len(measured) // 2], 3),
            "cpu_ms_p90": round(1000 * measured[int(len(measured) * 0.9)], 3)}


def _kwargs() -> dict[str, Any]:
    return dict(essay_id="bench", class_id=None, assignment_prompt="", dictionary=frozenset(), run_llm=False,
                llm_hold=frozenset())


async def bench(sizes: list[int], big: int, text: str, typed: int, every: int, warm: int) -> dict[str, Any]:
    spellchecker()
    words = prose(text)
    out: dict[str, Any] = {"text": text, "every_words": every}
    for name, runs in (("engine", essay_runs), ("host", host_runs)):
        for size in sizes:
            out[f"{name}_{size}_words"] = await runs(words, size, 0, typed, every, warm)
        if big:
            out[f"{name}_{big}_chars"] = await runs(words, 0, big, max(every * (warm + 10), typed // 5), every, warm)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--words", type=int, nargs="*", default=[100, 300, 600], help="essay lengths to type onto")
    parser.add_argument("--big", type=int, default=200_000, help="also a pasted essay of this many characters")
    parser.add_argument("--text", choices=corpus.TEXTS, default="latin")
    parser.add_argument("--typed", type=int, default=400, help="words typed onto each essay")
    parser.add_argument("--every", type=int, default=4, help="words between tier-1 runs")
    parser.add_argument("--warm", type=int, default=10, help="runs left out at the start")
    args = parser.parse_args()
    print(json.dumps(asyncio.run(bench(args.words, args.big, args.text, args.typed, args.every, args.warm)),
                     indent=2))


if __name__ == "__main__":
    main()
