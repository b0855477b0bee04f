"""Builds the bundled tasks in `doctor/tasks/data` from the held-out TinyStories excerpt, deterministically.

    python -m doctor.tasks.build            # rewrites doctor/tasks/data/*.jsonl
    python -m doctor.tasks.build --check    # exit 1 if the bundled files differ from a fresh build

- `tinystories-cloze` (multiple choice): a story prefix; the true next word against three words drawn from
  the same text (seeded), in the style of LAMBADA-like cloze tests (Paperno et al., 2016).
- `tinystories-names` (closed-ended generation): a story prefix ending before a sentence that starts with the
  name of the story's only named character ("... named Roxy. ... Roxy"); the answer is that name, extracted by
  a regex that finds it anywhere in the next 12 tokens.
- `tinystories-prompts` (open-ended): the first sentence of stories, for continuation.

Randomness comes from `random.Random(seed).random()` only, whose sequence Python keeps stable across versions.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import re
import sys
from pathlib import Path
from typing import Any

from doctor.resources import DATA
from doctor.tasks.format import DATA_DIR, HEADER_FORMAT

log = logging.getLogger(__name__)

SOURCE = DATA / "tinystories" / "valid-excerpt.txt"
SEPARATOR = "<|endoftext|>"
CLOZE_ITEMS, NAME_ITEMS, PROMPT_ITEMS = 100, 32, 24
CONTEXT_CHARS = 700  # keeps contexts near 200 tokens, so scoring stays cheap
_WORD = re.compile(r"\b[a-z]{3,}\b")
_STOP = frozenset(
    [
        "the", "and", "was", "she", "her", "his", "him", "they", "them", "then", "with", "that", "this", "there",
        "their", "were", "when", "what", "very", "said", "from", "had", "have", "not", "but", "for", "you", "your",
        "are", "all", "one", "day", "too", "can", "did", "out", "saw", "see", "got", "get", "who", "how", "why", "its",
    ]
)


def _pick(rng: random.Random, n: int) -> int:
    return min(int(rng.random() * n), n - 1)


def stories(source: Path = SOURCE) -> list[str]:
    """Whole stories only: the excerpt's first and last pieces may be cut mid-story."""
    docs = [d.strip() for d in source.read_text(encoding="utf-8").split(SEPARATOR)]
    return [d for d in docs[1:-1] if d]


def _header(name: str, kind: str, description: str, source: Path, **options: Any) -> dict[str, Any]:
    sha = hashlib.sha256(source.read_bytes()).hexdigest()[:16]
    return {
        "format": HEADER_FORMAT,
        "name": name,
        "type": kind,
        "description": description,
        "source": f"{source.name} (sha256 {sha}...), built by doctor.tasks.build",
        **options,
    }


def cloze_items(docs: list[str], seed: int, count: int = CLOZE_ITEMS) -> list[dict[str, Any]]:
    rng = random.Random(seed)
    pool = sorted({w for d in docs for w in _WORD.findall(d) if w not in _STOP})
    items = []
    for i, story in enumerate(docs):
        candidates = [
            m for m in _WORD.finditer(story[:CONTEXT_CHARS]) if m.group() not in _STOP and len(story[: m.start()].split()) >= 15
        ]
        if not candidates:
            continue
        gold_word = candidates[_pick(rng, len(candidates))]
        # half the distractors from the same story (plausible in context), the rest from the whole text
        local = sorted({w for w in _WORD.findall(story) if w not in _STOP and w != gold_word.group()})
        distractors: list[str] = []
        while len(distractors) < 3:
            source = local if local and len(distractors) < 2 else pool
            word = source[_pick(rng, len(source))]
            if word != gold_word.group() and word not in distractors:
                distractors.append(word)
        gold = _pick(rng, 4)
        choices = distractors[:gold] + [gold_word.group()] + distractors[gold:]
        context = story[: gold_word.start()].rstrip()
        items.append({"id": f"story{i}", "context": context, "choices": choices, "gold": gold})
        if len(items) == count:
            break
    return items


def name_items(docs: list[str], seed: int, count: int = NAME_ITEMS) -> list[dict[str, Any]]:
    rng = random.Random(seed + 1)
    items = []
    for i, story in enumerate(docs):
        intros = re.findall(r"named ([A-Z][a-z]+)", story[:CONTEXT_CHARS])
        if len(set(intros)) != 1:
            continue  # one named character, so the name to recall is unambiguous
        intro = re.search(r"named ([A-Z][a-z]+)", story)
        name = intro.group(1)
        later = [m for m in re.finditer(rf"(?<=[.!?] ){name}\b", story) if m.start() > intro.end()]
        if not later:
            continue
        later = [m for m in later if m.start() <= CONTEXT_CHARS] or later[:1]
        where = later[_pick(rng, len(later))]
        prompt = story[: where.start()].rstrip()
        items.append({"id": f"story{i}", "prompt": prompt, "answer": name})
        if len(items) == count:
            break
    return items


def prompt_items(docs: list[str], count: int = PROMPT_ITEMS) -> list[dict[str, Any]]:
    seen: set[str] = set()
    items = []
    step = max(1, len(docs) // count)
    for i in list(range(0, len(docs), step)) + list(range(len(docs))):
        first = re.match(r".+?[.!?](?=\s|$)", docs[i].replace("\n", " "))
        if first is None or len(first.group()) < 20 or first.group() in seen:
            continue
        seen.add(first.group())
        items.append({"id": f"story{i}", "prompt": first.group()})
        if len(items) == count:
            break
    return items


def build_tasks(source: Path = SOURCE, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """Task name -> lines (header first), all from `source`."""
    docs = stories(source)
    return {
        "tinystories-cloze": [
            _header(
                "tinystories-cloze", "multiple_choice",
                "Next word of a held-out TinyStories story: the true word against three words from the same text.",
                source, target_delimiter=" ",
            ),
            *cloze_items(docs, seed),
        ],
        "tinystories-names": [
            _header(
                "tinystories-names", "generation",
                "Recall a story's only named character: the story stops before a sentence that starts with the name, "
                "which must appear in the next 12 tokens.",
                source, max_new_tokens=12,
            ),
            *({**item, "regex": rf"\b({item['answer']})\b"} for item in name_items(docs, seed)),
        ],
        "tinystories-prompts": [
            _header("tinystories-prompts", "open", "First sentences of held-out TinyStories stories.", source),
            *prompt_items(docs),
        ],
    }


def render(lines: list[dict[str, Any]]) -> str:
    return "".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines)


def write_tasks(out_dir: Path = DATA_DIR, seed: int = 0) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, lines in build_tasks(seed=seed).items():
        path = out_dir / f"{name}.jsonl"
        path.write_text(render(lines), encoding="utf-8")
        written.append(path)
    return written


def stale_tasks(out_dir: Path = DATA_DIR, seed: int = 0) -> list[str]:
    """Bundled task files that differ from a fresh build."""
    stale = []
    for name, lines in build_tasks(seed=seed).items():
        path = out_dir / f"{name}.jsonl"
        if not path.is_file() or path.read_text(encoding="utf-8") != render(lines):
            stale.append(name)
    return stale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DATA_DIR)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--check", action="store_true", help="compare with the files in --out instead of writing")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.check:
        stale = stale_tasks(args.out, args.seed)
        for name in stale:
            log.error("%s: differs from a fresh build", name)
        return 1 if stale else 0
    for path in write_tasks(args.out, args.seed):
        log.info("wrote %s", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
