"""Fitting both artifacts from the training tables in a predictors folder (what `doctor predictor fit` runs)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pandas as pd

from doctor.errors import DataError
from doctor.predict.accuracy import ACCURACY_FILE, accuracy_rows, enough_rows, fit_accuracy
from doctor.predict.artifact import DEGRADATION_FILE, HEALTH_FILE, make_meta, save_artifact
from doctor.predict.fit import fit_degradation
from doctor.predict.health import fit_health
from doctor.predict.table import baseline_rows, degradation_rows, read_rows

log = logging.getLogger(__name__)

LITERATURE = "literature.csv"
OBSERVATIONS = "observations.csv"
HOME_ENV = "MODEL_DOCTOR_HOME"


def user_predictors_dir() -> Path:
    """Where `fit` writes and `add` appends by default: $MODEL_DOCTOR_HOME/predictors, else the user's
    application data folder (never the installed package)."""
    import click

    home = os.environ.get(HOME_ENV)
    return Path(home).expanduser() / "predictors" if home else Path(click.get_app_dir("model-doctor")) / "predictors"


def user_observations() -> Path:
    return user_predictors_dir() / "data" / OBSERVATIONS


def table_paths(data_dir: Path, observations: bool = True) -> list[Path]:
    """literature.csv (required), then observations.csv beside it and the user's own (when present and wanted)."""
    literature = Path(data_dir) / LITERATURE
    if not literature.is_file():
        raise DataError(f"{literature}: training table not found")
    paths = [literature]
    if observations:
        for extra in (Path(data_dir) / OBSERVATIONS, user_observations()):
            if extra.is_file() and all(extra.resolve() != p.resolve() for p in paths):
                paths.append(extra)
    return paths


def load_frames(paths: list[Path]) -> list[pd.DataFrame]:
    return [read_rows(p) for p in paths]


def fit_all(data_dir: Path, out_dir: Path, observations: bool = True, command: str = "") -> dict[str, str]:
    """Fit degradation, baseline-health and accuracy-drop models; write the artifacts; file name -> sha256."""
    paths = table_paths(data_dir, observations)
    frames = load_frames(paths)
    written = {}
    degradation = {"meta": make_meta("degradation", paths, command), "model": fit_degradation(degradation_rows(frames))}
    written[DEGRADATION_FILE] = save_artifact(degradation, Path(out_dir) / DEGRADATION_FILE)
    health = {"meta": make_meta("baseline-health", paths, command), "model": fit_health(baseline_rows(frames))}
    written[HEALTH_FILE] = save_artifact(health, Path(out_dir) / HEALTH_FILE)
    acc_rows = accuracy_rows(frames)
    if enough_rows(acc_rows):
        accuracy = {"meta": make_meta("accuracy-drop", paths, command), "model": fit_accuracy(acc_rows)}
        written[ACCURACY_FILE] = save_artifact(accuracy, Path(out_dir) / ACCURACY_FILE)
    else:
        log.warning("accuracy-drop model not fitted: %d accuracy rows with a dense value", len(acc_rows))
    log.info("fitted %s from %s", ", ".join(written), ", ".join(p.name for p in paths))
    return written
