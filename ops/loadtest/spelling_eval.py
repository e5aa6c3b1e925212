"""Spelling quality of the local (tier-1) checker on real misspellings (benchmark, not a test).

    .venv/bin/python -m ops.loadtest.spelling_eval                 # writes the section in AI_RESULTS.md
    .venv/bin/python -m ops.loadtest.spelling_eval --baseline-ref main   # also measures that commit's checker

Misspellings are real ones people wrote, from four corpora (see data/spelling/README.md): Birkbeck
(schoolchildren, students, adult literacy learners), Holbrook (secondary-school writing), the GNU
Aspell test list and Wikipedia's list of common misspellings. Each source's pairs are split by their
target word (crc32 of the word: even = tune, odd = held out), and the clean prose has a tuning part
and held-out parts written separately (essays with non-English names, place names, quoted foreign
sentences, loanwords and technical words; ``clean_fresh.txt`` is a late, second held-out part). The
checker was tuned on the tune halves; the report's headline numbers are the held-out halves.

Each measured pair is injected into a clean paragraph, about one misspelling per 20 words: where the
paragraph contains the target word, that occurrence is replaced (keeping its capital), otherwise a
random lower-case word outside quotations and hyphenated compounds is. The paragraph then goes through
``LocalAnalyzer.analyze_paragraph`` exactly as in the service. A spelling item on an injected span
is a hit; any other spelling item is a false flag. Real-word errors (the misspelling is itself a
word of the SCOWL list the checker ships, e.g. "form" for "from") cannot be caught by a dictionary
check: they are counted and reported separately, not injected. Pairs whose target or misspelling is
not a plain lower-case word (names, two-word items, digits) are left out and counted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gzip
import json
import os
import random
import re
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
DATA = HERE / "data" / "spelling"
RESULTS_MD = HERE / "AI_RESULTS.md"
RESULTS_JSON = HERE / "spelling_results.json"
SOURCES = ("birkbeck", "holbrook", "aspell", "wikipedia")
PER_SOURCE = 1500  # pairs measured per source and split (all of them where a source has fewer)
WORDS_PER_ERROR = 20
START, END = "<!-- spelling-eval:start -->", "<!-- spelling-eval:end -->"
_PLAIN = re.compile(r"^[a-z]+(?:'[a-z]+)?$")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_QUOTE = re.compile(r"\"[^\"\n]*\"|“[^”\n]*”")


@dataclass(frozen=True, slots=True)
class Pair:
    source: str
    misspelling: str
    target: str


# ---------------------------------------------------------------------------------------------
# Corpora


def _mitton(name: str, source: str, *, counted: bool) -> Iterator[Pair]:
    """Mitton's format: ``$target`` lines, each followed by its misspellings (Holbrook adds a count)."""
    target = None
    for line in (DATA / name).read_text(encoding="latin-1").splitlines():
        line = line.strip()
        if not line:
            continue
        if line.startswith("$"):
            target = line[1:]
        elif target not in (None, "?"):
            yield Pair(source, line.split()[0] if counted else line, target)


def load_pairs() -> dict[str, list[Pair]]:
    """Every (misspelling, target) pair of each source, in file order."""
    wikipedia = []
    for line in (DATA / "wikipedia.tsv").read_text(encoding="utf-8").splitlines():
        wrong, right = line.split("\t")
        wikipedia.append(Pair("wikipedia", wrong, right.split(",")[0].strip()))
    return {
        "birkbeck": list(_mitton("birkbeck.dat", "birkbeck", counted=False)),
        "holbrook": list(_mitton("holbrook-missp.dat", "holbrook", counted=True)),
        "aspell": list(_mitton("aspell.dat", "aspell", counted=False)),
        "wikipedia": wikipedia,
    }


def split_of(pair: Pair) -> str:
    return "tune" if zlib.crc32(pair.target.lower().encode()) % 2 == 0 else "heldout"


def scowl_words() -> frozenset[str]:
    """The SCOWL list the checker ships: the reference for 'is this misspelling a real word'."""
    data = resources.files("actors.analysis").joinpath("data", "english_words.txt.gz")
    with gzip.open(data.open("rb"), "rt", encoding="utf-8") as f:
        return frozenset(line.strip() for line in f if line.strip())


def _is_word(word: str, scowl: frozenset[str]) -> bool:
    return word in scowl or (word.endswith("'s") and word[:-2] in scowl)


def paragraphs(split: str) -> list[str]:
    text = (DATA / f"clean_{split}.txt").read_text(encoding="utf-8")
    return [p.strip() for p in text.split("\n\n") if p.strip()]


# ---------------------------------------------------------------------------------------------
# Injection


@dataclass(slots=True)
class Injected:
    text: str
    spans: dict[tuple[int, int], Pair]
    in_place: int


def inject(paragraph: str, pairs: list[Pair], rng: random.Random) -> Injected:
    """Replace one word per pair: an occurrence of the pair's target if there is one, else a random
    lower-case word outside quotations and hyphenated compounds; spans are of the final text."""
    quoted = [m.span() for m in _QUOTE.finditer(paragraph)]
    words = [
        m for m in _WORD.finditer(paragraph)
        if not any(s <= m.start() < e for s, e in quoted)
        and paragraph[m.start() - 1 : m.start()] != "-" and paragraph[m.end() : m.end() + 1] != "-"
    ]
    taken: set[int] = set()
    edits: list[tuple[int, int, str, Pair]] = []
    in_place = 0
    for pair in pairs:
        same = [i for i, m in enumerate(words) if i not in taken and m.group().lower() == pair.target]
        if same:
            i = rng.choice(same)
            in_place += 1
        else:
            free = [i for i, m in enumerate(words)
                    if i not in taken and m.group().isascii() and m.group().islower() and len(m.group()) > 2]
            if not free:
                continue
            i = rng.choice(free)
        taken.add(i)
        m = words[i]
        wrong = pair.misspelling
        if m.group()[0].isupper():
            wrong = wrong[0].upper() + wrong[1:]
        edits.append((m.start(), m.end(), wrong, pair))
    text, spans, shift = paragraph, {}, 0
    for start, end, wrong, pair in sorted(edits, key=lambda e: e[0]):
        s = start + shift
        text = text[:s] + wrong + text[s + (end - start) :]
        spans[(s, s + len(wrong))] = pair
        shift += len(wrong) - (end - start)
    return Injected(text, spans, in_place)


def spelling_spans(analyzer: Any, text: str) -> dict[tuple[int, int], str | None]:
    return {(i.start, i.end): i.suggestion for i in analyzer.analyze_paragraph(text) if i.kind == "spelling"}


# ---------------------------------------------------------------------------------------------
# Measurement


def evaluate(split: str, seed: int = 7, per_source: int = PER_SOURCE) -> dict[str, Any]:
    """Recall, precision and suggestion accuracy per source on one split, and false flags on that
    split's clean prose (plus the Cyrillic essay)."""
    from actors.analysis import spelling
    from actors.analysis.local import LocalAnalyzer

    analyzer = LocalAnalyzer()
    scowl = scowl_words()
    rng = random.Random(seed)
    clean = paragraphs(split)
    out: dict[str, Any] = {"sources": {}}
    for source, pairs in load_pairs().items():
        mine = [p for p in pairs if split_of(p) == split]
        plain = [p for p in mine if _PLAIN.match(p.misspelling) and _PLAIN.match(p.target) and p.misspelling != p.target]
        real_word = [p for p in plain if _is_word(p.misspelling, scowl)]
        nonword = [p for p in plain if not _is_word(p.misspelling, scowl)]
        sample = nonword if len(nonword) <= per_source else rng.sample(nonword, per_source)
        hits = top1 = top3 = false_flags = words = in_place = 0
        misses: list[str] = []
        queue = list(sample)
        while queue:
            para = rng.choice(clean)
            n = max(1, len(para.split()) // WORDS_PER_ERROR)
            batch, queue = queue[:n], queue[n:]
            injected = inject(para, batch, rng)
            in_place += injected.in_place
            words += len(injected.text.split())
            found = spelling_spans(analyzer, injected.text)
            for span, pair in injected.spans.items():
                if span in found:
                    hits += 1
                    top1 += (found[span] or "").lower() == pair.target
                    top3 += pair.target in spelling.suggestions(pair.misspelling)
                else:
                    misses.append(pair.misspelling)
            false_flags += sum(1 for span in found if span not in injected.spans)
        measured = len(sample)
        out["sources"][source] = {
            "pairs": len(mine), "plain": len(plain), "real_word": len(real_word), "nonword": len(nonword),
            "measured": measured, "in_place": in_place, "hits": hits, "false_flags": false_flags,
            "words": words,
            "recall": hits / max(measured, 1),
            "precision": hits / max(hits + false_flags, 1),
            "recall_all_plain": hits * len(nonword) / max(measured, 1) / max(len(plain), 1),
            "top1": top1 / max(hits, 1), "top3": top3 / max(hits, 1),
            "misses_sample": misses[:15],
        }
    out["clean"] = clean_flags(analyzer, clean)
    if split == "heldout":
        out["clean_fresh"] = clean_flags(analyzer, paragraphs("fresh"))
    out["cyrillic"] = clean_flags(analyzer, paragraphs("cyrillic"))
    return out


def clean_flags(analyzer: Any, texts: list[str]) -> dict[str, Any]:
    """Spelling flags on clean paragraphs, and their rate per 500 words."""
    words = sum(len(t.split()) for t in texts)
    flags = [t[s:e] for t in texts for s, e in spelling_spans(analyzer, t)]
    return {"words": words, "flags": flags, "per_500_words": 500 * len(flags) / max(words, 1)}


def latency(seed: int = 11) -> dict[str, float]:
    """Milliseconds of ``analyze_paragraph`` per 500 words of held-out prose with real misspellings
    injected: 'first' with the per-word caches cleared before each paragraph (a paragraph seen for
    the first time), 'repeat' with warm caches (the same paragraph re-checked after a keystroke)."""
    import actors.analysis.local as local
    from actors.analysis.local import LocalAnalyzer

    analyzer = LocalAnalyzer()
    rng = random.Random(seed)
    pairs = [p for ps in load_pairs().values() for p in ps if _PLAIN.match(p.misspelling) and _PLAIN.match(p.target)]
    texts = []
    for para in paragraphs("heldout"):
        texts.append(inject(para, rng.sample(pairs, max(1, len(para.split()) // WORDS_PER_ERROR)), rng).text)
    words = sum(len(t.split()) for t in texts)
    analyzer.analyze_paragraph(texts[0])  # loads the dictionary

    def clear() -> None:
        for module in {local, *(m for name, m in sys.modules.items() if name.startswith("actors.analysis"))}:
            for value in vars(module).values():
                if callable(getattr(value, "cache_clear", None)):
                    value.cache_clear()

    first = repeat = 0.0
    rounds = 5
    for _ in range(rounds):
        for text in texts:
            clear()
            t0 = time.perf_counter()
            analyzer.analyze_paragraph(text)
            t1 = time.perf_counter()
            analyzer.analyze_paragraph(text)
            t2 = time.perf_counter()
            first += t1 - t0
            repeat += t2 - t1
    scale = 500 / words / rounds * 1000
    code_root = Path(local.__file__).resolve().parent.parent.parent
    return {"first_ms_per_500_words": first * scale, "repeat_ms_per_500_words": repeat * scale,
            "words": words, "load_s": _load_seconds(code_root)}


def _load_seconds(code_root: Path) -> float:
    """Seconds to import the analyser and load its dictionary in a fresh interpreter."""
    code = ("import time;t=time.perf_counter();import actors.analysis.local as l;l.spellchecker();"
            "print(time.perf_counter()-t)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(code_root),
                         cwd=code_root, check=True)
    return float(run.stdout.strip().splitlines()[-1])


def _env(code_root: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(code_root) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return env


def measure_quality() -> dict[str, Any]:
    """Quality of the checker this interpreter imports (``--part quality`` of a subprocess)."""
    _shim_old_checker()
    return {"heldout": evaluate("heldout"), "tune": evaluate("tune")}


def _shim_old_checker() -> None:
    """A checker from before actors/analysis/spelling.py existed: give evaluate() its one hook."""
    import types

    from actors.analysis import local

    try:
        import actors.analysis.spelling  # noqa: F401
    except ImportError:
        shim = types.ModuleType("actors.analysis.spelling")
        shim.suggestions = lambda word: tuple(filter(None, [getattr(local, "_correction", lambda w: None)(word)]))  # type: ignore[attr-defined]
        sys.modules["actors.analysis.spelling"] = shim
        import actors.analysis

        actors.analysis.spelling = shim  # type: ignore[attr-defined]


def _run_part(code_root: Path, part: str) -> dict[str, Any]:
    """``part`` ("quality" or "latency") in a fresh interpreter that imports ``actors`` from
    ``code_root`` and this module (and its data) from this checkout."""
    script = ("import json,sys;sys.path.append(%r);from ops.loadtest import spelling_eval as e;"
              "json.dump(e.measure_quality() if %r == 'quality' else e.latency(), sys.stdout)") % (
        str(HERE.parent.parent), part)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=_env(code_root),
                         cwd=code_root, check=True)
    return json.loads(run.stdout)


def _checkout(ref: str, into: Path) -> Path:
    """``ref``'s actors/ under ``into``, with this checkout's word list (the eval's reference)."""
    root = HERE.parent.parent
    archive = subprocess.run(["git", "archive", ref, "actors"], cwd=root, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    data = into / "actors" / "analysis" / "data"
    data.mkdir(exist_ok=True)
    (data / "english_words.txt.gz").write_bytes((root / "actors/analysis/data/english_words.txt.gz").read_bytes())
    return into


def measure(baseline_ref: str | None, rounds: int = 3) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """Quality of this checkout's checker (and ``baseline_ref``'s), then latency of both in
    alternating fresh interpreters, the best of ``rounds`` each: on a shared machine, load that
    comes and goes then hits both alike."""
    root = HERE.parent.parent
    with tempfile.TemporaryDirectory() as tmp:
        base_root = _checkout(baseline_ref, Path(tmp)) if baseline_ref else None
        result = _run_part(root, "quality")
        base = _run_part(base_root, "quality") if base_root else None
        runs: dict[str, list[dict[str, float]]] = {"now": [], "base": []}
        for _ in range(rounds):
            runs["now"].append(_run_part(root, "latency"))
            if base_root:
                runs["base"].append(_run_part(base_root, "latency"))
    best = lambda xs: {k: min(x[k] for x in xs) for k in xs[0]}  # noqa: E731
    result["latency"] = best(runs["now"])
    if base is not None:
        base["latency"] = best(runs["base"])
    return result, base


# ---------------------------------------------------------------------------------------------
# Report


def _pct(x: float) -> str:
    return f"{x:.3f}"


def section(result: dict[str, Any], base: dict[str, Any] | None, command: str, when: str, machine: str) -> str:
    held, tune = result["heldout"], result["tune"]
    rows = []
    for name in SOURCES:
        h, t = held["sources"][name], tune["sources"][name]
        b = base["heldout"]["sources"][name] if base else None
        rows.append(
            f"| {name} | {h['measured']} | **{_pct(h['recall'])}** | **{_pct(h['precision'])}** | "
            f"{_pct(h['top1'])} / {_pct(h['top3'])} | {h['real_word']} of {h['plain']} ({h['real_word'] / max(h['plain'], 1):.0%}) | "
            f"{_pct(h['recall_all_plain'])} | {_pct(t['recall'])} / {_pct(t['precision'])} | "
            + (f"{_pct(b['recall'])} / {_pct(b['precision'])} |" if b else "- |")
        )
    def totals(res: dict[str, Any]) -> tuple[float, float]:
        hits = sum(s["hits"] for s in res["sources"].values())
        measured = sum(s["measured"] for s in res["sources"].values())
        ff = sum(s["false_flags"] for s in res["sources"].values())
        return hits / max(measured, 1), hits / max(hits + ff, 1)
    hr, hp = totals(held)
    tr, tp = totals(tune)
    lat = result.get("latency", {})
    blat = (base or {}).get("latency", {})
    clean_h, clean_t = held["clean"], tune["clean"]
    base_clean = base["heldout"]["clean"] if base else None
    lines = [
        START,
        "## Spelling quality of the local checker (target: recall >= 0.95 at precision >= 0.95, <= 1 false flag per 500 words)",
        "",
        f"Date: {when} · Machine: {machine}",
        f"Command: `{command}` (method and data sources: the module docstring and `ops/loadtest/data/spelling/README.md`)",
        "",
        "Real misspellings from four corpora, injected into clean essays at about one per "
        f"{WORDS_PER_ERROR} words and checked with `LocalAnalyzer.analyze_paragraph`. Pairs are split by target word; the "
        "checker was tuned on the tune halves and the tuning prose, **held-out** numbers first (the held-out prose's "
        "flags were inspected during development; `clean_fresh.txt` is a late, blind part: see the data README). Recall and "
        "precision count non-word errors (the misspelling is not an English word); real-word errors are "
        "out of reach of any dictionary check and are shown separately, with recall over all plain pairs "
        "including them. Precision depends on how often students misspell: it is hits / (hits + false "
        "flags) at this injection rate; the clean-prose rate below is the density-free figure.",
        "",
        "| source (held out) | misspellings injected | recall | precision | suggestion top-1 / top-3 | real-word errors (not injected) | recall incl. real-word | tune recall / precision | before (baseline) recall / precision |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        *rows,
        f"| **all (held out)** | {sum(s['measured'] for s in held['sources'].values())} | **{_pct(hr)}** | **{_pct(hp)}** | | | | {_pct(tr)} / {_pct(tp)} | "
        + (f"{_pct(totals(base['heldout'])[0])} / {_pct(totals(base['heldout'])[1])} |" if base else "- |"),
        "",
        f"False flags on clean prose (names from many languages, quoted French/Spanish/German/Italian/Latin/Swahili/"
        f"Portuguese sentences, loanwords, technical words, British spelling): **held out {len(clean_h['flags'])} in "
        f"{clean_h['words']} words = {clean_h['per_500_words']:.2f} per 500 words** "
        f"({', '.join(clean_h['flags']) or 'none'}); tune {len(clean_t['flags'])} in {clean_t['words']} words = "
        f"{clean_t['per_500_words']:.2f} per 500 words ({', '.join(clean_t['flags']) or 'none'})"
        + (f"; before: {len(base_clean['flags'])} in {base_clean['words']} held-out words = "
           f"{base_clean['per_500_words']:.2f} per 500 words." if base_clean else ".")
        + (f" Second held-out part (`clean_fresh.txt`, written late, see the data README): "
           f"{len(held['clean_fresh']['flags'])} in {held['clean_fresh']['words']} words = "
           f"{held['clean_fresh']['per_500_words']:.2f} per 500 words ({', '.join(held['clean_fresh']['flags']) or 'none'})."
           if "clean_fresh" in held else "")
        + f" Cyrillic essay ({held['cyrillic']['words']} words): {len(held['cyrillic']['flags'])} spelling flags.",
        "",
    ]
    if lat:
        lines += [
            "Cost (`analyze_paragraph` with every rule on held-out prose with misspellings; each checker in its own "
            "fresh interpreter, alternating, best of 3 runs each; absolute times follow the machine's load, shown "
            "above, so compare the rows):",
            "",
            "| checker | ms per 500 words, paragraph seen first time (word caches cleared) | ms per 500 words, re-check (warm caches) | dictionary load in a fresh process |",
            "| --- | ---: | ---: | ---: |",
            f"| now | {lat['first_ms_per_500_words']:.1f} | {lat['repeat_ms_per_500_words']:.1f} | {lat['load_s']:.2f} s |",
        ]
        if blat:
            lines.append(
                f"| before (baseline) | {blat['first_ms_per_500_words']:.1f} | {blat['repeat_ms_per_500_words']:.1f} | {blat['load_s']:.2f} s |"
            )
        lines.append("")
    lines += ["Raw numbers and sample misses: `ops/loadtest/spelling_results.json`.", END]
    return "\n".join(lines) + "\n"


def write_section(text: str) -> None:
    current = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.exists() else ""
    if START in current and END in current:
        head, rest = current.split(START, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        current = head + text + ("\n" + tail if tail else "")
    else:
        current = current.rstrip("\n") + "\n\n" + text
    RESULTS_MD.write_text(current, encoding="utf-8")


def _machine_line(m: dict[str, Any]) -> str:
    load = ", ".join(m.get("loadavg_at_start", []))
    return f"{m.get('cpu')} · {m.get('nproc')} cores (load average at start: {load}) · {m.get('os')}"


def with_spelling_section(report: str) -> str:
    """``report`` (a whole new AI_RESULTS.md from ai_bench) keeping the current spelling section."""
    current = RESULTS_MD.read_text(encoding="utf-8") if RESULTS_MD.exists() else ""
    if START not in current or END not in current:
        return report
    kept = START + current.split(START, 1)[1].split(END, 1)[0] + END + "\n"
    return report.rstrip("\n") + "\n\n" + kept


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline-ref", help="also measure the checker of this git ref (e.g. main)")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    parser.add_argument("--render-only", action="store_true", help="rewrite the section from spelling_results.json")
    args = parser.parse_args(argv)
    if args.render_only:
        stored = json.loads(RESULTS_JSON.read_text())
        m = stored["machine"]
        write_section(section(stored["result"], stored["baseline"], stored["command"], stored["date"],
                              _machine_line(stored["machine"])))
        return
    from ops.loadtest.run import machine

    m = machine()
    result, base = measure(args.baseline_ref)
    command = "python -m ops.loadtest.spelling_eval" + (f" --baseline-ref {args.baseline_ref}" if args.baseline_ref else "")
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = section(result, base, command, when, _machine_line(m))
    if args.no_write:
        print(text)
        return
    stored = {"date": when, "command": command, "machine": m, "result": result, "baseline": base}
    RESULTS_JSON.write_text(json.dumps(stored, indent=1) + "\n")
    write_section(text)
    print(text)


if __name__ == "__main__":
    main()
