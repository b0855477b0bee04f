"""results.jsonl: each checkup result appended (and flushed) the moment it exists, so nothing is lost.

The first line is a header with the examination's fingerprint (model weights, suite, evaluation tokens);
`--resume` reuses results only under the same fingerprint, and only for checkups whose spec is unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from doctor.errors import DoctorError
from doctor.results import CheckupResult

JOURNAL = "results.jsonl"


class Journal:
    def __init__(self, out_dir: Path, fingerprint: dict, resume: bool) -> None:
        self.path = out_dir / JOURNAL
        self.fingerprint = fingerprint
        self.done: dict[str, CheckupResult] = {}
        if resume and self.path.exists():
            self._load()
        else:
            self._start()

    def _start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps({"header": self.fingerprint}, sort_keys=True) + "\n")

    def _load(self) -> None:
        lines = self.path.read_text(encoding="utf-8").splitlines()
        try:
            header = json.loads(lines[0])["header"]
        except (IndexError, ValueError, KeyError, TypeError):
            raise DoctorError(f"{self.path}: not a results journal; remove it or drop --resume") from None
        changed = [k for k in self.fingerprint if header.get(k) != self.fingerprint[k]]
        if changed:
            raise DoctorError(
                f"{self.path}: cannot resume, the examination differs in {', '.join(changed)}; use a new --out"
            )
        for number, line in enumerate(lines[1:], start=2):
            try:
                result = CheckupResult.model_validate_json(line)
            except ValueError:
                # a line cut short by an interruption: that checkup simply runs again
                if number != len(lines):
                    raise DoctorError(f"{self.path}:{number}: unreadable result line") from None
                continue
            self.done[result.id] = result
        # rewrite without a torn last line
        with self.path.open("w", encoding="utf-8") as fh:
            fh.write(json.dumps({"header": self.fingerprint}, sort_keys=True) + "\n")
            for result in self.done.values():
                fh.write(result.model_dump_json() + "\n")

    def reusable(self, checkup_id: str, modification: dict) -> CheckupResult | None:
        """A finished, successful result for this exact checkup spec, if the journal has one."""
        result = self.done.get(checkup_id)
        if result is None or result.modification != modification or result.status != "ok":
            return None
        return result

    def append(self, result: CheckupResult) -> None:
        self.done[result.id] = result
        with self.path.open("a", encoding="utf-8") as fh:
            fh.write(result.model_dump_json() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
