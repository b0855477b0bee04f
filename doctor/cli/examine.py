"""`doctor examine`: load, validate everything first, run the suite, write the reports, exit with the verdict."""

from __future__ import annotations

import re
import shlex
import sys
from datetime import datetime
from pathlib import Path

import click

from doctor.cli.errors import user_errors
from doctor.cli.executor import executor_options, make_executor
from doctor.placement.flags import DEVICE_MAPS
from doctor.spec.checkup import SEVERITIES


def _default_out(model_name: str) -> Path:
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return Path("reports") / f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', model_name)}-{stamp}"


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        from doctor.errors import DoctorError

        raise DoctorError("--device cuda: no CUDA device is available")
    return name


def resume_command(ctx: click.Context, out: Path) -> str:
    """The exact command line that continues this examination: every option given, plus --out and --resume."""
    words = ["doctor"] + (["-v"] if ctx.obj.get("verbose") else []) + ["examine"]
    for param in ctx.command.params:
        value = ctx.params.get(param.name)
        if param.name in ("out", "resume", "overwrite") or value is None or value == param.default:
            continue
        if isinstance(param, click.Argument):
            words.append(str(value))
        elif param.is_flag:
            words.append(param.opts[0])
        else:
            for item in value if param.multiple else [value]:
                words += [param.opts[0], str(item)]
    return shlex.join([*words, "--out", str(out), "--resume"])


@click.command()
@click.argument("model", required=False)
@click.option("--suite", default=None, help="Built-in suite name or a suite YAML file  [default: quick].")
@click.option("--candidate", "candidates", multiple=True, type=click.Path(path_type=Path),
              help="A ready-made compressed artifact of MODEL to judge (GGUF file, GPTQ/AWQ/compressed-tensors or "
              "safetensors folder); repeatable. Without --suite, only the candidates are examined.")
@click.option("--rules", "rule_dirs", multiple=True, type=click.Path(path_type=Path), help="Extra rule directory.")
@click.option("--backend", type=click.Choice(["torch", "onnx"]), default="torch", show_default=True)
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="auto", show_default=True)
@click.option("--dtype", type=click.Choice(["float32", "float16", "bfloat16", "auto"]), default="float32",
              show_default=True, help="auto: bfloat16 where fast and within 1% of float32 on the first window.")
@click.option("--device-map", type=click.Choice(DEVICE_MAPS), default=None,
              help="Spread the model over the devices with accelerate (default auto when --max-memory or "
              "--offload-folder is given); calibrated methods then run one decoder layer at a time.")
@click.option("--max-memory", default=None, metavar="DEV=SIZE,...",
              help="Memory per device for the weights, e.g. 0=20GiB,cpu=60GiB (cpu=30MB on a CPU-only machine); "
              "what does not fit is offloaded to --offload-folder.")
@click.option("--offload-folder", type=click.Path(path_type=Path), default=None,
              help="Folder for weights offloaded to disk.")
@click.option("--out", type=click.Path(path_type=Path), default=None, help="Output folder (default reports/<model>-<time>).")
@click.option("--resume", is_flag=True, help="Reuse the results already in --out/results.jsonl.")
@click.option("--overwrite", is_flag=True, help="Start again in an --out that holds an examination (its "
              "results.jsonl is moved aside to results.jsonl.N).")
@click.option("--fail-on", type=click.Choice(list(SEVERITIES)), default="high", show_default=True,
              help="Exit 1 when a finding has at least this severity.")
@click.option("--max-windows", type=int, default=None, help="Override the suite's number of evaluation windows.")
@click.option("--no-predictor", is_flag=True, help="Skip the fitted expectation.")
@click.option("--predictor", "predictor_dir", type=click.Path(path_type=Path), default=None,
              help="A predictors folder (from `doctor predictor fit`) instead of the shipped one.")
@click.option("--allow-pickle", is_flag=True, help="Allow pickle checkpoints (they can run code when loaded).")
@click.option("--trust-remote-code", is_flag=True, help="Allow model code from the hub.")
@executor_options
@click.pass_context
def examine(ctx: click.Context, model: str | None, suite: str | None, candidates: tuple[Path, ...], rule_dirs: tuple[Path, ...], backend: str, device: str,
            dtype: str, device_map: str | None, max_memory: str | None, offload_folder: Path | None, out: Path | None, resume: bool, overwrite: bool, fail_on: str, max_windows: int | None,
            no_predictor: bool, predictor_dir: Path | None, allow_pickle: bool, trust_remote_code: bool,
            **where) -> None:
    """Examine MODEL (a Hugging Face folder or hub id, a .gguf file, or smollm2-135m; the demo model when omitted)."""
    from doctor.cli.progress import Progress
    from doctor.errors import DoctorError
    from doctor.examination.runner import Options
    from doctor.examination.runner import examine as run
    from doctor.input.preflight import check_out_dir, move_aside, preflight
    from doctor.patient import check_reference, load_patient
    from doctor.placement.check import placement_facts, plan_placement

    verbose = ctx.obj["verbose"]
    with user_errors(verbose):
        if resume and out is None:
            raise DoctorError("--resume needs --out pointing at the interrupted examination's folder")
        if resume and overwrite:
            raise DoctorError("--resume and --overwrite exclude each other: continue the examination or start again")
        if max_windows is not None and max_windows < 1:
            raise DoctorError(f"--max-windows {max_windows}: the number of evaluation windows must be at least 1")
        # everything the user supplied is checked before the model loads (which can take an hour)
        checked = preflight(suite or "quick", list(rule_dirs), max_windows=max_windows)
        if candidates:
            from doctor.artifacts.suite import with_candidates

            checked.suite, checked.sha256 = with_candidates(checked.suite, checked.sha256, list(candidates),
                                                            keep_checkups=suite is not None)
        if out is not None:
            check_out_dir(out, resume=resume, overwrite=overwrite)
        if predictor_dir is not None and not no_predictor:
            _preflight_predictor(predictor_dir)
        check_reference(model, allow_pickle=allow_pickle)
        device = _device(device)
        placement, estimate = plan_placement(model, checked.suite, dtype, device,
                                             (device_map, max_memory, offload_folder))
        _quiet_transformers()
        load_args = {"device": device, "dtype": "float32" if dtype == "auto" else dtype, "allow_pickle": allow_pickle,
                     "trust_remote_code": trust_remote_code, "placement": placement}
        executor = make_executor(model, load_args, backend=backend, **where)  # a Ray task loads as the driver does
        patient = load_patient(model, **load_args)
        from doctor.artifacts.suite import check_candidates_fit

        check_candidates_fit(checked.suite, patient)
        if out is None:
            out = _default_out(patient.facts.id)
            check_out_dir(out, resume=resume, overwrite=overwrite)
        options = Options(out_dir=out, backend=backend, device=device, resume=resume, fail_on=fail_on,
                          rule_dirs=list(rule_dirs), suite_path=_suite_label(checked.path),
                          suite_sha256=checked.sha256, use_predictor=not no_predictor, predictor_dir=predictor_dir,
                          rules=checked.rules, dtype=dtype, command=_command_line(),
                          memory=placement_facts(patient, placement, estimate))
        if overwrite and (moved := move_aside(out)) is not None:
            click.echo(f"previous results moved to {moved}", err=True)
        loaded = checked.suite
        try:
            with Progress(len(loaded.checkups)) as progress:
                exam = run(patient, loaded, options, progress=progress.status, advance=progress.advance,
                           executor=executor)
        except KeyboardInterrupt:
            click.secho(f"interrupted: finished checkups are kept in {out / 'results.jsonl'}; "
                        f"continue with: {resume_command(ctx, out)}", fg="yellow", err=True)
            sys.exit(130)
        from doctor.report import write_reports

        paths = write_reports(exam, out)
    _summary(exam, paths)
    sys.exit(exam.exit_code)


def _command_line() -> str:
    """The command as typed, with the program named `doctor` however it was started."""
    import shlex

    return shlex.join(["doctor", *sys.argv[1:]])


def _preflight_predictor(folder: Path) -> None:
    """A predictors folder that cannot be read is bad input: say so before any model is loaded."""
    from doctor.predict.accuracy import load_accuracy
    from doctor.predict.predict import Predictor

    Predictor.load(folder)
    load_accuracy(folder)


def _suite_label(path: Path) -> str:
    """Built-in suites are named as such, so reports do not carry this machine's install path."""
    from doctor.resources import CHECKUPS_DIR

    return f"builtin:{path.name}" if path.resolve().parent == CHECKUPS_DIR.resolve() else str(path)


def _quiet_transformers() -> None:
    """Library chatter (download retries, load bars) would bury the one-line error or the summary."""
    import logging

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("huggingface_hub").setLevel(logging.ERROR)
    try:
        from huggingface_hub.utils import logging as hub_logging

        hub_logging.set_verbosity_error()
    except ImportError:
        pass


def _summary(exam, paths: dict) -> None:
    base = exam.baseline.metrics["ppl"]
    click.echo(f"{exam.patient.id}: baseline perplexity {base.value:.4g} on {exam.baseline.text.corpus} "
               f"({exam.baseline.text.tokens} tokens)")
    for c in exam.checkups:
        if c.status == "error":
            click.echo(f"  {c.id:28} ERROR  {c.error}")
            continue
        shown = [f"{k}={c.metrics[k].value:.4g}" for k in ("ppl_ratio", "kl_mean", "top1_agreement") if k in c.metrics]
        click.echo(f"  {c.id:28} {c.verdict.upper():5} {'  '.join(shown)}")
    for f in exam.findings:
        click.echo(f"  [{f.severity}] {f.title}")
    from doctor.report.gate import gate

    decision = gate(exam)  # the report's release gate, so the terminal never says more than the page
    colour = {"pass": "green", "warn": "yellow", "fail": "red"}[decision.state]
    click.secho(f"{decision.headline} (exit {exam.exit_code}): {decision.reason}", fg=colour)
    for kind, path in paths.items():
        click.echo(f"  {kind}: {path}")
