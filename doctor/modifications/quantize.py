"""`kind: quantize`: weight-only quantization of every linear layer in the decoder blocks.

RTN needs no data; GPTQ and AWQ run one calibrated pass over the decoder layers (`doctor.compress`).
"""

from __future__ import annotations

import time

from doctor.architectures import architecture_of
from doctor.compress.adapters import block_linears, decoder_layers, linear_weight, set_linear_weight
from doctor.compress.quantizer import effective_bits, max_levels, quantize_rtn
from doctor.modifications.base import Applied, ApplyContext
from doctor.modifications.coverage import account, prepare_targets, snapshot
from doctor.modifications.kinds.quantize import METHODS
from doctor.modifications.ssm_params import as_rows, include_ssm_params, round_ssm_params
from doctor.placement.offload import materialized
from doctor.plugins import resolve
from doctor.results import LayerStat
from doctor.spec.modification import QuantizeSpec


def apply(spec: QuantizeSpec, ctx: ApplyContext) -> Applied:
    model = ctx.patient.model
    prepare_targets(model, ctx.undo, spec.targets)
    if spec.ssm_params == "quantize":
        include_ssm_params(model, ctx.undo)
    before = snapshot(model)
    applied = resolve(METHODS[spec.method])(spec, ctx)
    if spec.ssm_params == "quantize":  # after the method: GPTQ and AWQ calibrate on the mixer as it was
        applied.realized["ssm_params_rtn"] = round_ssm_params(model, spec.bits, spec.group_size, spec.symmetric,
                                                              ctx.undo)
    applied.realized.update(_realized_bits(spec, ctx))
    account(applied, model, ctx.undo, before, f"quantize {spec.method}")
    return applied


def apply_rtn(spec: QuantizeSpec, ctx: ApplyContext) -> Applied:
    layers = []
    for index, block in enumerate(decoder_layers(ctx.patient.model)):
        start = time.perf_counter()
        with materialized(block, ctx.undo):
            for _name, module in block_linears(block).items():
                ctx.undo.save_tensor(module.weight)
                w = linear_weight(module)
                set_linear_weight(module, quantize_rtn(w, spec.bits, spec.group_size, spec.symmetric))
        layers.append(LayerStat(layer=index, seconds=time.perf_counter() - start))
    return Applied(layers=layers)


def _realized_bits(spec: QuantizeSpec, ctx: ApplyContext) -> dict:
    """Distinct levels actually used per group, and storage bits per weight including scales.

    GPTQ with act_order (without static groups) forms groups in Hessian order, so column groups in storage order
    are not its groups; their level count is not reported then.
    """
    permuted_groups = spec.method == "gptq" and spec.act_order and not spec.static_groups and spec.group_size is not None
    total = weighted_bits = 0.0
    most_levels = 0
    for block in decoder_layers(ctx.patient.model):
        with materialized(block):
            ssm = [as_rows(p) for p in architecture_of(block).ssm_targets(block).values()]
            for w in [linear_weight(m).detach() for m in block_linears(block).values()] + ssm:
                n = w.numel()
                total += n
                weighted_bits += n * effective_bits(spec.bits, spec.group_size, w.shape[1], spec.symmetric)
                most_levels = max(most_levels, max_levels(w, spec.group_size))
    return {
        "bits": spec.bits,
        "group_size": spec.group_size,
        "effective_bits": weighted_bits / total if total else None,
        "max_levels_per_group": None if permuted_groups else most_levels,
        "quantized_weights": int(total),
    }
