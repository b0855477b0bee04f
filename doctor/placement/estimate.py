"""The memory an examination needs, from the model's config and the suite, before any weight is loaded.

What is counted (each part says where it lives):
- weights: parameters (counted on a meta-device instance of the config, tied weights once) x dtype bytes;
- KL cache (host): evaluation tokens x the baseline store's bytes per token (`doctor.kl_store`: 4 V for `full`,
  the mass budget for `mass`; `exact` lives on disk, 2 V + 8);
- Hessians (execution device): d_in^2 x 4 bytes per distinct input of the largest group of linears a GPTQ or
  SparseGPT checkup calibrates at once (one group of all linears unless `true_sequential`);
- calibration activations (execution device): samples x seq_len x hidden x dtype bytes, twice (a layer's inputs
  and outputs are alive together);
- one decoder block's weights (execution device), brought on at a time when the model is dispatched.
Not counted: the evaluation pass's own activations and logits (a few windows' worth), the Python process, and
library workspaces; the estimate is a floor, not a bound.
"""

from __future__ import annotations

from dataclasses import dataclass, field

DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
HESSIAN_METHODS = {("quantize", "gptq"), ("prune", "sparsegpt")}
CALIBRATED_METHODS = HESSIAN_METHODS | {("quantize", "awq"), ("prune", "wanda")}
_ASSUMED_WINDOWS = 40  # a suite without max_windows evaluates its whole text; counted as this many windows


@dataclass
class Shape:
    """What the estimate reads from a model's config."""

    params: int
    layers: int
    hidden: int
    intermediate: int
    attention: int  # heads x head dim: o_proj's input
    vocab: int
    context: int | None
    block_params: int  # the largest decoder block's parameters


@dataclass
class Estimate:
    """Bytes per part, and where each part lives ('host', 'device', or 'disk')."""

    parts: dict[str, int] = field(default_factory=dict)
    where: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add(self, name: str, size: int, where: str) -> None:
        self.parts[name] = int(size)
        self.where[name] = where

    def total(self, where: str | None = None) -> int:
        return sum(v for k, v in self.parts.items() if where is None or self.where[k] == where)

    @property
    def working_set(self) -> int:
        """What the execution device needs besides the weights placed on it."""
        return sum(v for k, v in self.parts.items() if self.where[k] == "device" and k != "weights")

    def to_record(self) -> dict:
        return {"bytes": dict(self.parts), "where": dict(self.where), "notes": list(self.notes)}


def model_shape(config) -> Shape:
    """Parameter counts of a config, from a meta-device instance (no memory, no weights read)."""
    import torch
    from accelerate import init_empty_weights
    from transformers import AutoModelForCausalLM

    with init_empty_weights(), torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    model.tie_weights()  # tied embeddings are one tensor in the loaded model; count them once here too
    from doctor.compress.adapters import decoder_layers
    from doctor.patient import count_params

    params = count_params(model)

    blocks = decoder_layers(model)
    block_params = max((sum(p.numel() for p in b.parameters()) for b in blocks), default=0)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", 0)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", 0) or 1
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return Shape(
        params=params, layers=len(blocks), hidden=hidden,
        intermediate=getattr(config, "intermediate_size", None) or getattr(config, "n_inner", None) or 4 * hidden,
        attention=heads * head_dim, vocab=config.vocab_size,
        context=getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None),
        block_params=block_params,
    )


def _leaves(modification) -> list:
    steps = getattr(modification, "steps", None)
    return [leaf for step in steps for leaf in _leaves(step)] if steps else [modification]


def _kl_bytes_per_token(eval_spec, vocab: int) -> tuple[int, str]:
    from doctor.metrics.evaluation import kl_plan

    plan = kl_plan(vocab, eval_spec.kl_mode, eval_spec.kl_target_mass, eval_spec.kl_bytes_per_token,
                   eval_spec.kl_top_k)
    if plan.mode == "full":
        return 4 * vocab, "host"
    if plan.mode == "exact":
        return 2 * vocab + 8, "disk"
    from doctor.kl_store import ENTRY_BYTES, TOKEN_BYTES

    return TOKEN_BYTES + ENTRY_BYTES * plan.entries_cap(vocab), "host"


def estimate(shape: Shape, suite, dtype: str, dispatched: bool = False) -> Estimate:
    """The memory `suite` needs on a model of `shape` in `dtype`: the weights on the execution device, or spread
    by accelerate (`dispatched`, then one block at a time comes onto the execution device)."""
    width = DTYPE_BYTES.get(dtype, 4)
    est = Estimate()
    est.add("weights", shape.params * width, "spread" if dispatched else "device")
    seq_len = min(suite.eval.seq_len or 2048, shape.context or 2048)
    windows = suite.eval.window_cap(seq_len)
    if windows is None:
        windows = _ASSUMED_WINDOWS
        est.notes.append(f"eval.max_windows and max_tokens unset: the KL cache is counted for {windows} windows")
    per_token, where = _kl_bytes_per_token(suite.eval, shape.vocab)
    est.add("kl_cache", windows * (seq_len - 1) * per_token, where)
    leaves = [leaf for c in suite.checkups for leaf in _leaves(c.modification)]
    calibrated = [leaf for leaf in leaves if (leaf.kind, getattr(leaf, "method", None)) in CALIBRATED_METHODS]
    if calibrated:
        hessian = [leaf for leaf in calibrated if (leaf.kind, leaf.method) in HESSIAN_METHODS]
        if hessian:
            one_group = any(not leaf.true_sequential for leaf in hessian)
            dims = [shape.hidden, shape.hidden, shape.attention, shape.intermediate]  # qkv, gate/up, o, down
            est.add("hessians", 4 * (sum(d * d for d in dims) if one_group else max(d * d for d in dims)), "device")
        samples, cal_len = _calibration_size(suite, calibrated, seq_len, shape.context)
        est.add("calibration_activations", 2 * samples * cal_len * shape.hidden * width, "device")
    if dispatched:
        est.add("one_block", shape.block_params * width, "device")
    return est


def _calibration_size(suite, calibrated: list, eval_len: int, context: int | None) -> tuple[int, int]:
    """The largest calibration set any calibrated checkup uses: (samples, seq_len)."""
    from doctor.data.calibration import calibration_size
    from doctor.modifications.awq import CALIBRATION as AWQ_WINDOWS

    sizes = [
        calibration_size(leaf.calibration or suite.calibration, eval_len, context,
                         AWQ_WINDOWS if getattr(leaf, "method", None) == "awq" else None)
        for leaf in calibrated
    ]
    return max(sizes, key=lambda s: s[0] * s[1])


def gib(size: int) -> str:
    return f"{size / 2**30:.3g} GiB" if size >= 2**28 else f"{size / 2**20:.3g} MiB"


def summary(est: Estimate) -> str:
    """One line for the report: each part, and the total per place."""
    parts = ", ".join(f"{k.replace('_', ' ')} {gib(v)} ({est.where[k]})" for k, v in est.parts.items() if v)
    return parts + (f"; {'; '.join(est.notes)}" if est.notes else "")
