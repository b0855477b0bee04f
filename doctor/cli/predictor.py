"""`doctor predictor fit|evaluate|show|add`: the fitted expectation's life cycle."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import click

from doctor.cli import user_errors
from doctor.resources import PREDICTORS_DIR

DATA_DIR = PREDICTORS_DIR / "data"


def _guard(fn):
    """One-line errors, exit 2 (the main group's contract; tracebacks with `doctor -v`)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context(silent=True)
        verbose = bool(ctx and ctx.find_root().obj and ctx.find_root().obj.get("verbose"))
        with user_errors(verbose):
            return fn(*args, **kwargs)
    return wrapper


@click.group()
def predictor() -> None:
    """Fit, evaluate, inspect and extend the degradation and baseline-health predictors."""


_data = click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=DATA_DIR,
                     show_default=True, help="Folder with literature.csv (and observations.csv).")
_no_obs = click.option("--no-observations", is_flag=True, help="Fit on the published table only.")


@predictor.command()
@_data
@_no_obs
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=PREDICTORS_DIR,
              show_default=True, help="Where degradation.json, baseline-health.json and accuracy-drop.json are written.")
@_guard
def fit(data_dir: Path, no_observations: bool, out_dir: Path) -> None:
    """Fit the predictors on the training tables and write them as plain JSON."""
    from doctor.predict.train import fit_all

    command = "doctor predictor fit" + (" --no-observations" if no_observations else "")
    for name, sha in fit_all(data_dir, out_dir, not no_observations, command).items():
        click.echo(f"wrote {out_dir / name}  sha256 {sha}")


def _table(frame, float_cols: dict[str, str]) -> str:
    cols = list(frame.columns)
    cells = [[(float_cols[c].format(v) if c in float_cols and isinstance(v, float) and math.isfinite(v) else str(v))
              for c, v in zip(cols, row, strict=True)] for row in frame.itertuples(index=False)]
    widths = [max(len(c), *(len(r[i]) for r in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.rjust(w) if i else v.ljust(w) for i, (v, w) in enumerate(zip(r, widths, strict=True)))
              for r in cells]
    return "\n".join(lines)


@predictor.command()
@_data
@_no_obs
@click.option("--by-family", is_flag=True, help="Also print the table per held-out family.")
@_guard
def evaluate(data_dir: Path, no_observations: bool, by_family: bool) -> None:
    """Leave-one-family-out: MAE of log PPL ratio and of accuracy drop (pp) per kind, model vs naive median,
    and 90% interval coverage."""
    from doctor.predict.evaluate import family_summary, held_out_predictions, summarize
    from doctor.predict.table import degradation_rows
    from doctor.predict.train import load_frames, table_paths

    frame = degradation_rows(load_frames(table_paths(data_dir, not no_observations)))
    held = held_out_predictions(frame)
    fmt = {"mae_model": "{:.3f}", "mae_naive": "{:.3f}", "coverage_90": "{:.1%}"}
    families = frame.model_family.nunique()
    click.echo(f"Leave-one-family-out on {len(frame)} rows, {families} families (target: log PPL ratio)\n")
    click.echo(_table(summarize(held), fmt))
    if by_family:
        click.echo("")
        click.echo(_table(family_summary(held), fmt))
    _evaluate_accuracy(data_dir, no_observations, by_family, fmt)


def _evaluate_accuracy(data_dir: Path, no_observations: bool, by_family: bool, fmt: dict[str, str]) -> None:
    from doctor.predict.accuracy import accuracy_rows, enough_rows, held_out_accuracy
    from doctor.predict.evaluate import family_summary, summarize
    from doctor.predict.train import load_frames, table_paths

    frame = accuracy_rows(load_frames(table_paths(data_dir, not no_observations)))
    if frame.model_family.nunique() < 2 or not enough_rows(frame[frame.model_family != frame.model_family.mode()[0]]):
        click.echo(f"\naccuracy drop: {len(frame)} rows, too few for leave-one-family-out")
        return
    held = held_out_accuracy(frame)
    fmt = {**fmt, "mae_model": "{:.2f}", "mae_naive": "{:.2f}"}
    click.echo(f"\nLeave-one-family-out on {len(frame)} rows, {frame.model_family.nunique()} families "
               "(target: accuracy drop in percentage points)\n")
    click.echo(_table(summarize(held), fmt))
    if by_family:
        click.echo("")
        click.echo(_table(family_summary(held), fmt))


@predictor.command()
@click.option("--dir", "pred_dir", type=click.Path(path_type=Path), default=PREDICTORS_DIR, show_default=True,
              help="A predictors folder or a degradation.json.")
@click.option("--json", "as_json", is_flag=True, help="Print the whole artifact as JSON.")
@_guard
def show(pred_dir: Path, as_json: bool) -> None:
    """Training summary, domain of validity and coefficients of the fitted predictors."""
    import numpy as np

    from doctor.predict.predict import Predictor

    p = Predictor.load(pred_dir)
    if as_json:
        from doctor.predict.accuracy import load_accuracy

        acc = load_accuracy(pred_dir)
        click.echo(json.dumps({"meta": p.meta, "model": p.model, "health": p.health,
                               "accuracy_drop": acc.model if acc else None}, indent=1))
        return
    click.echo(f"{p.name}  sha256 {p.sha256}\ncreated {p.meta.get('created')}  by: {p.meta.get('command')}")
    click.echo(f"training tables: {json.dumps(p.meta.get('training_tables', {}))}")
    click.echo(f"training: {json.dumps(p.model['training'])}")
    click.echo("domain: " + "; ".join(f"{k} [{lo:.3g}, {hi:.3g}]" for k, (lo, hi) in p.model["domain"].items()))
    click.echo(f"target: {p.model['target']} (eps {p.model['eps']})\n")
    se = np.sqrt(np.clip(np.diag(p.cov), 0, None))
    for name, coef, s in zip(p.model["features"], p.coef, se, strict=True):
        click.echo(f"  {name:16s} {coef:+9.4f}  (se {s:.4f})")
    if p.health:
        click.echo(f"\nbaseline health: {json.dumps(p.health['training'])}")
        for name, coef in zip(p.health["features"], p.health["coef"], strict=True):
            click.echo(f"  {name:16s} {coef:+9.4f}")
    _show_accuracy(pred_dir)


def _show_accuracy(pred_dir: Path) -> None:
    import numpy as np

    from doctor.predict.accuracy import load_accuracy

    acc = load_accuracy(pred_dir)
    if acc is None:
        click.echo("\naccuracy drop: no accuracy-drop.json")
        return
    model = acc.model
    click.echo(f"\naccuracy drop ({acc.name}  sha256 {acc.sha256}): {json.dumps(model['training'])}")
    click.echo("domain: " + "; ".join(f"{k} [{lo:.3g}, {hi:.3g}]" for k, (lo, hi) in model["domain"].items()))
    click.echo(f"target: {model['target']} (c {model['c']})")
    se = np.sqrt(np.clip(np.diag(acc.cov), 0, None))
    for name, coef, s in zip(model["features"], acc.coef, se, strict=True):
        click.echo(f"  {name:16s} {coef:+9.4f}  (se {s:.4f})")


@predictor.command()
@click.argument("results", type=click.Path(dir_okay=False, path_type=Path))
@_data
@_guard
def add(results: Path, data_dir: Path) -> None:
    """Append an examination's checkups (with the model's facts) to observations.csv."""
    from doctor.predict.observations import add_results
    from doctor.predict.train import OBSERVATIONS

    table = data_dir / OBSERVATIONS
    n = add_results(results, table)
    click.echo(f"added {n} rows to {table}" if n else f"{results} is already in {table} (or has no perplexities)")
