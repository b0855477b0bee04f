"""`doctor examine`'s options for where checkups run: here (default) or as tasks on a Ray cluster."""

from __future__ import annotations

import functools
from pathlib import Path

import click

from doctor.errors import DoctorError


def executor_options(command):
    """--executor, --address, --checkup-gpus, --checkup-cpus (applied to `examine`)."""
    for option in reversed([
        click.option("--executor", type=click.Choice(["in-process", "ray"]), default="in-process", show_default=True,
                     help="Where checkups run: here, one after the other, or as Ray tasks (needs model-doctor[ray])."),
        click.option("--address", default=None,
                     help="Ray cluster to use, e.g. ray://HEAD:10001 or auto (default: RAY_ADDRESS, else local)."),
        click.option("--checkup-gpus", type=float, default=None,
                     help="GPUs per checkup task (fractions share a GPU)  [default: 1 with --device cuda, else 0]."),
        click.option("--checkup-cpus", type=float, default=1.0, show_default=True, help="CPUs per checkup task."),
    ]):
        command = option(command)
    return command


def make_executor(model: str | None, load_args: dict, *, backend: str, executor: str, address: str | None,
                  checkup_gpus: float | None, checkup_cpus: float):
    """None for the in-process default; for `--executor ray` a RayExecutor (Ray checked to be importable) whose
    tasks load `model` with the driver's `load_args` (a local folder by its absolute path)."""
    if executor != "ray":
        given = [name for name, value in (("--address", address), ("--checkup-gpus", checkup_gpus)) if value is not None]
        if checkup_cpus != 1.0:
            given.append("--checkup-cpus")
        if given:
            raise DoctorError(f"{', '.join(given)} only apply to --executor ray")
        return None
    from doctor.examination.ray_executor import RayExecutor
    from doctor.patient import load_patient

    if model is not None and Path(model).expanduser().exists():
        model = str(Path(model).expanduser().resolve())
    load = functools.partial(load_patient, model, **load_args)
    return RayExecutor(load, backend=backend, device=load_args["device"], address=address, gpus=checkup_gpus,
                       cpus=checkup_cpus)
