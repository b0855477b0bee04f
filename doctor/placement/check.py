"""Before loading: does the examination fit where it is asked to run? Refuse with the numbers, or adapt.

On one device the weights and the working set (Hessians, calibration activations) must fit in the execution
device's free memory and the KL cache in the host's; otherwise the examination stops before loading with one
line naming the need, what is free, and the flag to use. With `--device-map` and no `--max-memory`, the limits
are derived here so that accelerate leaves the working set free on every execution device (it would otherwise
fill it with weights); a `--max-memory` that leaves too little room is refused the same way.
"""

from __future__ import annotations

import logging

from doctor.errors import DoctorError
from doctor.placement.estimate import Estimate, estimate, gib, model_shape, summary
from doctor.placement.flags import Placement, placement_from_flags

log = logging.getLogger(__name__)


def _config(model_ref: str | None):
    """The model's config without its weights; None where it cannot be read (a GGUF file, an offline hub id)."""
    from transformers import AutoConfig

    from doctor.model_files import hub_offline
    from doctor.patient import check_reference

    source, path, local = check_reference(model_ref, allow_pickle=True)
    if path.is_file():  # a GGUF file: dequantized in memory by its own loader
        return None
    try:
        return AutoConfig.from_pretrained(str(path) if local else source, local_files_only=not local and hub_offline())
    except Exception as exc:  # an unknown architecture or an unreachable hub: the estimate says it is missing
        log.info("no memory estimate: %s", exc)
        return None


def free_memory(device: str) -> dict[str, int]:
    """Free bytes on each CUDA device (by index) and on the host ('cpu')."""
    import psutil
    import torch

    free: dict[str, int] = {"cpu": int(psutil.virtual_memory().available)}
    if device == "cuda" and torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            free[str(i)] = int(torch.cuda.mem_get_info(i)[0])
    return free


def plan_placement(model_ref: str | None, suite, dtype: str, device: str,
                   flags: tuple[str | None, str | None, object]) -> tuple[Placement, Estimate | None]:
    """The placement `--device-map`, `--max-memory` and `--offload-folder` ask for, checked against the estimate
    (`dtype` as requested: 'auto' is examined in float32 first)."""
    placement = placement_from_flags(*flags, device)
    if placement.dispatched and dtype == "auto":
        raise DoctorError("--dtype auto compares float32 and bfloat16 copies of the whole model in memory; with "
                          "--device-map, --max-memory or --offload-folder pass --dtype float32, float16 or bfloat16")
    load_dtype = "float32" if dtype == "auto" else dtype
    return placement, check_memory(model_ref, suite, load_dtype, device, placement)


def check_memory(model_ref: str | None, suite, dtype: str, device: str, placement: Placement) -> Estimate | None:
    """The estimate for this examination; raises DoctorError when it cannot fit, adapts `placement` when asked."""
    config = _config(model_ref)
    if config is None:
        return None
    try:
        shape = model_shape(config)
    except Exception as exc:  # an architecture transformers cannot instantiate: loading will say why
        log.info("no memory estimate: %s", exc)
        return None
    est = estimate(shape, suite, dtype, placement.dispatched)
    free = free_memory(device)
    if placement.dispatched:
        _fit_dispatched(est, placement, free, device)
    else:
        _fit_one_device(est, free, device)
    return est


def _fit_one_device(est: Estimate, free: dict[str, int], device: str) -> None:
    host = est.total("host")
    if device == "cuda":
        need, have = est.total("device"), free.get("0", 0)
        if need > have:
            raise DoctorError(f"needs ~{gib(need)} on cuda:0 ({summary(est)}), {gib(have)} free: pass --max-memory "
                              "(e.g. 0=20GiB,cpu=60GiB) or --device-map auto")
    else:
        host += est.total("device")
    if host > free["cpu"]:
        raise DoctorError(f"needs ~{gib(host)} of host memory ({summary(est)}), {gib(free['cpu'])} available: pass "
                          "--device-map auto --offload-folder DIR (or --max-memory cpu=SIZE), or lower the suite's "
                          "eval.max_windows")


def _fit_dispatched(est: Estimate, placement: Placement, free: dict[str, int], device: str) -> None:
    """Limits that keep the working set free on the execution device (GPU 0, or the CPU)."""
    exec_key: int | str = 0 if device == "cuda" and "0" in free else "cpu"
    host_reserve = est.total("host") + (est.working_set if exec_key == "cpu" else 0)
    if placement.max_memory is None:
        # every GPU calibrates the layers it holds, so each keeps room for the working set
        limits: dict[int | str, int] = {int(k): v - est.working_set for k, v in free.items() if k != "cpu"}
        limits["cpu"] = free["cpu"] - host_reserve
        if any(v <= 0 for v in limits.values()):
            short = next(k for k, v in limits.items() if v <= 0)
            raise DoctorError(f"the working set alone ({summary(est)}) does not fit on "
                              f"{'cuda:' if short != 'cpu' else ''}{short}: lower the suite's calibration samples "
                              "or eval.max_windows")
        placement.max_memory = limits
        return
    limit = placement.max_memory.get(exec_key)
    have = free["0"] if exec_key == 0 else free["cpu"]
    reserve = est.working_set if exec_key == 0 else host_reserve
    if limit is not None and limit + reserve > have:
        where = "cuda:0" if exec_key == 0 else "the host"
        raise DoctorError(f"--max-memory gives {gib(limit)} of weights to {where}, plus ~{gib(reserve)} to work "
                          f"with ({summary(est)}), {gib(have)} free: lower --max-memory {exec_key}=")


def placement_facts(patient, placement: Placement, est: Estimate | None) -> dict[str, str]:
    """What the report's baseline section shows: the estimate, the placement asked for and where weights went."""
    facts = {"memory_estimate": summary(est) if est is not None else "not estimated (no readable config)"}
    if placement.dispatched:
        facts["placement"] = placement.describe()
        facts["decoder_layers_on"] = _layers_by_device(patient.model)
    return facts


def _layers_by_device(model) -> str:
    """'cpu 2, disk 4': where accelerate put each decoder layer (the longest device-map prefix of its name)."""
    from doctor.compress.adapters import decoder_layers

    device_map = getattr(model, "hf_device_map", {})
    names = {id(m): n for n, m in model.named_modules()}
    where: dict[str, int] = {}
    for layer in decoder_layers(model):
        name = names[id(layer)]
        keys = [k for k in device_map if k == "" or name == k or name.startswith(f"{k}.")]
        device = str(device_map[max(keys, key=len)]) if keys else "unknown"
        where[device] = where.get(device, 0) + 1
    return ", ".join(f"{d} {n}" for d, n in sorted(where.items()))
