"""Tier 1 alone: CPU per re-analysis of an essay being typed at its end (benchmark, not a test).

`host_bench.py --shape continuous` types into essays that start empty, so within its window they
stay under ~50 words and tier 1 is a small share of the host; a class's essays run to hundreds of
words. This types real essay prose (``data/spelling/clean_*.txt``; ``--text cyrillic`` or
``mixed`` interleaves non-ASCII words) word by word onto essays of a given length and re-analyses
the settled text every ``--every`` words, as the host's scheduler does every 2 s at a word per
0.5 s, with one engine as on a host. Reported: process CPU per run (``time.process_time``; the
robust number on a shared machine) after ``--warm`` warm-up runs.

    .venv/bin/python -m ops.loadtest.tier1_bench
    .venv/bin/python -m ops.loadtest.tier1_bench --words 100 300 600 --big 200000 --text mixed
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

from actors.analysis.engine import AnalysisEngine
from actors.analysis.local import LocalAnalyzer, spellchecker
from actors.feedback import settled_text
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
    measured = sorted(cpu[warm:])
    return {"chars": len(old), "runs": len(measured), "items": items,
            "cpu_ms_mean": round(1000 * sum(measured) / len(measured), 3),
            "cpu_ms_median": round(1000 * measured[len(measured) // 2], 3),
            "cpu_ms_p90": round(1000 * measured[int(len(measured) * 0.9)], 3)}


def _kwargs() -> dict[str, Any]:
    return dict(essay_id="bench", class_id=None, assignment_prompt="", dictionary=frozenset(), run_llm=False,
                llm_hold=frozenset())


async def bench(sizes: list[int], big: int, text: str, typed: int, every: int, warm: int) -> dict[str, Any]:
    spellchecker()
    words = prose(text)
    out: dict[str, Any] = {"text": text, "every_words": every}
    for size in sizes:
        out[f"{size}_words"] = await essay_runs(words, size, 0, typed, every, warm)
    if big:
        out[f"{big}_chars"] = await essay_runs(words, 0, big, max(every * (warm + 10), typed // 5), every, warm)
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
