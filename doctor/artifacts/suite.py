"""The suite that `doctor examine ORIGINAL --candidate A --candidate B ...` runs: one artifact checkup per
candidate, measured with the evaluation text and windows of the suite it extends."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from doctor.errors import DoctorError
from doctor.spec.checkup import Checkup, Suite

CANDIDATE_METRICS = ["perplexity", "kl", "size"]


def checkup_id(path: Path, taken: set[str]) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.:-]+", "-", path.name.removesuffix(".gguf")).strip("-._:") or "candidate"
    base = f"candidate-{stem}"
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def with_candidates(suite: Suite, sha256: str, candidates: list[Path], keep_checkups: bool) -> tuple[Suite, str]:
    """`suite` with a checkup per candidate (after its own checkups, or instead of them), and the SHA-256 that
    identifies the combination for --resume."""
    from doctor.input.preflight import check_artifact

    for path in candidates:
        try:
            check_artifact(str(path), "auto")
        except DoctorError as exc:
            raise DoctorError(f"--candidate {exc}") from None
    taken = {c.id for c in suite.checkups} if keep_checkups else set()
    added = [
        Checkup(id=checkup_id(path, taken), description=f"ready-made artifact {path}",
                modification={"kind": "artifact", "path": str(path.resolve())}, metrics=CANDIDATE_METRICS,
                severity="medium", tags=["candidate"])
        for path in candidates
    ]
    checkups = (list(suite.checkups) if keep_checkups else []) + added
    name = suite.name if keep_checkups else f"{suite.name}+candidates"
    combined = suite.model_copy(update={"checkups": checkups, "name": name})
    digest = hashlib.sha256(sha256.encode())
    for path in candidates:
        digest.update(str(path.resolve()).encode())
    return combined, digest.hexdigest()


def check_candidates_fit(suite: Suite, patient) -> None:
    """Every artifact of `suite` has the patient's tokenizer: checked once the model is loaded, before the
    baseline is measured, so a wrong file is a one-line error (exit 2) rather than an hour's wait."""
    from doctor.artifacts.candidate import check_tokenizer
    from doctor.input.preflight import artifact_refs

    for _, path, _ in artifact_refs(suite):
        check_tokenizer(Path(path).expanduser(), patient)
