"""Everything a user supplies, checked before any model is loaded: `examine` runs this first, and
`doctor checkups validate` runs the same checks.

The suite file is validated by its Pydantic models; what they cannot see is checked here: the content of every
task file (not only its path), task names unique across bundled and user tasks, corpus files readable and
within limits, and the output folder usable. Every problem is one line naming file, key path and the limit or
reason; all problems of a suite are reported together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from doctor.errors import ConfigError, DoctorError
from doctor.examination.journal import JOURNAL
from doctor.input.limits import MAX_CORPUS_BYTES, read_text
from doctor.spec.checkup import Suite
from doctor.spec.loading import parse_yaml
from doctor.spec.suites import load_suite


@dataclass
class Checked:
    """A suite that passed every up-front check, and the rules to diagnose with."""

    suite: Suite
    path: Path
    sha256: str
    rules: list = field(default_factory=list)


def task_refs(suite: Suite) -> list[tuple[tuple, str]]:
    """(key path, task reference) for every task a run of this suite reads, default tasks included."""
    from doctor.tasks.format import DEFAULT_TASKS

    refs = []
    for i, checkup in enumerate(suite.checkups):
        refs += [(("checkups", i, "tasks", j), ref) for j, ref in enumerate(checkup.tasks)]
        if "tasks" in checkup.metrics and not checkup.tasks:
            refs += [(("checkups", i, "metrics"), ref) for ref in DEFAULT_TASKS]
    return refs


def corpus_refs(suite: Suite) -> list[tuple[tuple, str]]:
    refs = [(("eval", "corpus"), suite.eval.corpus), (("calibration", "corpus"), suite.calibration.corpus)]
    for i, checkup in enumerate(suite.checkups):
        calibration = getattr(checkup.modification, "calibration", None)
        if calibration is not None:
            refs.append((("checkups", i, "modification", "calibration", "corpus"), calibration.corpus))
    return refs


def check_corpus(name: str) -> None:
    """A bundled corpus, 'auto', or a readable UTF-8 file within `MAX_CORPUS_BYTES`."""
    from doctor.data.texts import CORPORA

    if name == "auto" or name in CORPORA:
        return
    path = Path(name).expanduser()
    if not path.is_file():
        raise ConfigError(f"'{name}': not a bundled corpus ({', '.join(CORPORA)}) nor a text file")
    try:
        read_text(path, MAX_CORPUS_BYTES, "the corpus", name)
    except ConfigError as exc:
        raise ConfigError(str(exc).removeprefix(f"{name}: ")) from None


def check_suite_inputs(suite: Suite, path: Path) -> None:
    """Task files read and validated, task names unique, corpora present: `ConfigError` listing every problem."""
    from doctor.tasks.format import load_task

    problems: list[tuple[tuple, str]] = []
    names: dict[str, tuple[Path, str]] = {}
    loaded: dict[str, object] = {}
    for where, ref in task_refs(suite):
        if ref not in loaded:
            try:
                loaded[ref] = load_task(ref)
            except DoctorError as exc:
                loaded[ref] = None
                problems.append((where, str(exc)))
        task = loaded[ref]
        if task is None:
            continue
        first = names.setdefault(task.name, (task.path.resolve(), ref))
        if first[0] != task.path.resolve():
            problems.append((where, f"task '{ref}' is named '{task.name}' like task '{first[1]}'; metrics are keyed "
                             "by task name, so give one of them another header \"name\""))
    for where, name in corpus_refs(suite):
        try:
            check_corpus(name)
        except ConfigError as exc:
            problems.append((where, str(exc)))
    if problems:
        raise ConfigError("\n".join(_located(path, where, message) for where, message in problems))


def _located(path: Path, where: tuple, message: str) -> str:
    lines = _lines(path)
    line = next((lines[where[:i]] for i in range(len(where), -1, -1) if where[:i] in lines), None)
    prefix = f"{path}:{line}" if line is not None else str(path)
    return f"{prefix}: {'.'.join(str(p) for p in where)}: {message}"


def _lines(path: Path) -> dict[tuple, int]:
    try:
        return parse_yaml(path.read_text(encoding="utf-8"), str(path)).lines
    except (DoctorError, OSError, UnicodeDecodeError):
        return {}


def check_out_dir(out: Path, *, resume: bool, overwrite: bool) -> None:
    """The output folder is created and written to, and holds no examination that would be silently replaced."""
    if out.exists() and not out.is_dir():
        raise DoctorError(f"--out {out}: exists and is not a folder")
    existing = next((p for p in out.parents if p.exists()), None)
    if existing is not None and not existing.is_dir():
        raise DoctorError(f"--out {out}: {existing} is a file, not a folder")
    try:  # the only sure test of writability (permissions, read-only mounts, quotas) is to write
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".doctor-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise DoctorError(f"--out {out}: cannot write there: {exc.strerror or exc}") from None
    journal = out / JOURNAL
    if journal.exists() and not (resume or overwrite):
        raise DoctorError(
            f"--out {out}: holds an examination ({JOURNAL}); add --resume to continue it, --overwrite to move it "
            "aside and start again, or choose another --out"
        )


def move_aside(out: Path) -> Path | None:
    """`--overwrite`: the previous journal is renamed, never deleted (`results.jsonl.1`, `.2`, ...)."""
    journal = out / JOURNAL
    if not journal.exists():
        return None
    n = 1
    while (target := out / f"{JOURNAL}.{n}").exists():
        n += 1
    journal.rename(target)
    return target


def check_suite(ref: str) -> Checked:
    """Load and check one suite (a built-in name or a file): what `checkups validate` runs for each file."""
    suite, path, sha = load_suite(ref)
    check_suite_inputs(suite, path)
    return Checked(suite, path, sha)


def preflight(ref: str, rule_dirs: list[Path], *, max_windows: int | None = None) -> Checked:
    """Suite and rules, checked in full before any model is loaded."""
    from doctor.diagnose import load_rules

    checked = check_suite(ref)
    if max_windows is not None:
        spec = checked.suite.eval.model_copy(update={"max_windows": max_windows})
        checked.suite = checked.suite.model_copy(update={"eval": spec})
    checked.rules = load_rules(rule_dirs)
    return checked
