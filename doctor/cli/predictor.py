"""`doctor predictor fit|evaluate|show|add`: the fitted expectation's life cycle."""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path

import click

from doctor.cli.errors import user_errors
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


def _user_dir() -> Path:
    from doctor.predict.train import user_predictors_dir

    return user_predictors_dir()


@predictor.command()
@_data
@_no_obs
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where degradation.json, baseline-health.json and accuracy-drop.json are written "
                   "(default: the user's predictors folder, $MODEL_DOCTOR_HOME/predictors or the application "
                   "data folder; never the installed package).")
@_guard
def fit(data_dir: Path, no_observations: bool, out_dir: Path | None) -> None:
    """Fit the predictors on the training tables and write them as plain JSON."""
    from doctor.errors import DataError
    from doctor.predict.train import fit_all

    out_dir = out_dir or _user_dir()
    command = "doctor predictor fit" + (" --no-observations" if no_observations else "")
    try:
        written = fit_all(data_dir, out_dir, not no_observations, command)
    except OSError as exc:
        raise DataError(f"{out_dir}: cannot write the predictors: {exc.strerror or exc}") from None
    for name, sha in written.items():
        click.echo(f"wrote {out_dir / name}  sha256 {sha}")
    click.echo(f"use it with: doctor examine MODEL --predictor {out_dir}")


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


_TABLE_FMT = {"mae": "{:.3f}", "median_ae": "{:.3f}", "naive_kind_mae": "{:.3f}", "naive_bucket_mae": "{:.3f}",
              "naive_bucket_median_ae": "{:.3f}", "coverage90": "{:.1%}", "median_width": "{:.2f}",
              "in_domain": "{:.0%}"}


@predictor.command()
@_data
@_no_obs
@click.option("--by", type=click.Choice(["source", "family"]), default="source", show_default=True,
              help="Hold out one publication (source) or one model family at a time.")
@click.option("--on", "on_table", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Score a fitted predictor on this table (training-table layout) without refitting.")
@click.option("--predictor", "pred_dir", type=click.Path(path_type=Path), default=None,
              help="The predictors folder scored by --on (default: the shipped one).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every number as JSON to this file ('-': standard output only).")
@click.option("--groups", is_flag=True, help="Also print the table per held-out source or family.")
@_guard
def evaluate(data_dir: Path, no_observations: bool, by: str, on_table: Path | None, pred_dir: Path | None,
             json_out: Path | None, groups: bool) -> None:
    """Held-out MAE and median absolute error of the log PPL ratio per kind and bits/sparsity bucket, against
    the naive kind and kind x bucket medians, with 90% interval coverage and width (accuracy drop in pp
    likewise). Without --on: leave-one-source-out (default) or leave-one-family-out refits."""
    from doctor.predict.evaluate import report, summarize
    from doctor.predict.table import degradation_rows
    from doctor.predict.train import load_frames, table_paths

    quiet = json_out is not None and str(json_out) == "-"
    say = (lambda *_: None) if quiet else click.echo
    train = degradation_rows(load_frames(table_paths(data_dir, not no_observations)))
    if on_table is not None:
        held, skipped, title = _score_on(on_table, pred_dir, train)
        numbers = {"mode": f"scored on {on_table} without refitting", "table": str(on_table)}
    else:
        if pred_dir is not None:
            raise click.UsageError("--predictor applies to --on (held-out evaluation refits on the tables)")
        from doctor.predict.evaluate import held_out_predictions

        held, skipped = held_out_predictions(train, by), []
        title = (f"Leave-one-{by}-out on {len(train)} rows, {train.source.nunique()} sources, "
                 f"{train.model_family.nunique()} families (target: log PPL ratio)")
        numbers = {"mode": f"leave-one-{by}-out"}
    say(title + "\n")
    if len(held):
        say(_table(summarize(held), _TABLE_FMT))
        say("")
        say(_table(summarize(held, "bucket"), _TABLE_FMT))
        if groups and "held_out" in held:
            say("")
            say(_table(summarize(held, "held_out"), _TABLE_FMT))
        numbers.update(report(held))
        say(f"\npredictions or bounds beyond uniform guessing: {numbers['beyond_uniform_guessing']}")
    numbers["skipped"] = skipped
    if skipped:
        say(f"\n{len(skipped)} rows not predicted:")
        for row in skipped[:20]:
            say(f"  row {row['row']} ({row['source']}, {row['model']}, {row['method']}): {row['reason']}")
    if on_table is None:
        numbers["accuracy_drop"] = _evaluate_accuracy(data_dir, no_observations, by, groups, say)
    _write_json(numbers, json_out)


def _score_on(table: Path, pred_dir: Path | None, train):
    from doctor.predict.evaluate import score_table
    from doctor.predict.predict import Predictor
    from doctor.predict.table import degradation_rows_with_reasons, read_rows
    from doctor.resources import PREDICTORS_DIR

    predictor = Predictor.load(pred_dir or PREDICTORS_DIR)
    rows, dropped = degradation_rows_with_reasons([read_rows(table)])
    held, failed = score_table(predictor, rows, train)
    title = (f"{predictor.name} ({pred_dir or 'shipped'}) scored on {table}: {len(held)} rows "
             "(target: log PPL ratio; naive medians from the training table)")
    return held, dropped + failed, title


def _write_json(numbers: dict, json_out: Path | None) -> None:
    if json_out is None:
        return
    text = json.dumps(numbers, indent=1, allow_nan=False, default=float)
    if str(json_out) == "-":
        click.echo(text)
        return
    try:
        json_out.write_text(text + "\n")
    except OSError as exc:
        from doctor.errors import DataError

        raise DataError(f"{json_out}: cannot write: {exc.strerror or exc}") from None


def _evaluate_accuracy(data_dir: Path, no_observations: bool, by: str, groups: bool, say) -> dict | None:
    from doctor.predict.accuracy import accuracy_rows, enough_rows, held_out_accuracy
    from doctor.predict.evaluate import GROUPINGS, report, summarize
    from doctor.predict.train import load_frames, table_paths

    frame = accuracy_rows(load_frames(table_paths(data_dir, not no_observations)))
    column = GROUPINGS[by]
    if frame[column].nunique() < 2 or not enough_rows(frame[frame[column] != frame[column].mode()[0]]):
        say(f"\naccuracy drop: {len(frame)} rows, too few for leave-one-{by}-out")
        return None
    held = held_out_accuracy(frame, by)
    fmt = {**_TABLE_FMT, "mae": "{:.2f}", "median_ae": "{:.2f}", "naive_kind_mae": "{:.2f}",
           "naive_bucket_mae": "{:.2f}", "naive_bucket_median_ae": "{:.2f}", "median_width": "{:.1f}"}
    say(f"\nLeave-one-{by}-out on {len(frame)} rows, {frame[column].nunique()} {by} groups "
        "(target: accuracy drop in percentage points)\n")
    say(_table(summarize(held), fmt))
    if groups:
        say("")
        say(_table(summarize(held, "held_out"), fmt))
    numbers = report(held)
    numbers.pop("beyond_uniform_guessing", None)
    return numbers


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
    click.echo(f"target: {p.model['target']} (eps {p.model['eps']})")
    unidentified = p.model.get("unidentified", {})
    click.echo("not identified by the table (0 or the typical class, interval widened by the prior sd): "
               + (", ".join(f"{k} (sd {v:.2f})" for k, v in unidentified.items()) or "none") + "\n")
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
@click.option("--data", "data_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of the observations.csv to append to (default: the user's predictors/data folder, "
                   "which `fit` reads too).")
@_guard
def add(results: Path, data_dir: Path | None) -> None:
    """Append an examination's checkups (with the model's facts) to observations.csv."""
    from doctor.predict.observations import add_results
    from doctor.predict.train import OBSERVATIONS, user_observations

    table = data_dir / OBSERVATIONS if data_dir is not None else user_observations()
    try:
        n = add_results(results, table)
    except OSError as exc:
        from doctor.errors import DataError

        raise DataError(f"{table}: cannot write: {exc.strerror or exc}") from None
    click.echo(f"added {n} rows to {table}" if n else f"{results} is already in {table} (or has no perplexities)")
