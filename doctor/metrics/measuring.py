"""Measuring one checkup's metric groups: what the groups share is computed once, each group reads its part.

The evaluation pass over the eval windows serves every group that declares `evaluation` (with KL when any of
them needs it); the layer probe rides on it (hooks) and serves `layer_error` and `attention` together.
"""

from __future__ import annotations

import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

from doctor.metrics.registry import MetricGroup, groups
from doctor.placement.offload import is_offloaded
from doctor.results import LayerStat, Measurement


@dataclass
class Measuring:
    """One checkup being measured: the session, the checkup, its backend and apply context, its result so far."""

    session: Any  # doctor.examination.checkup.Session
    checkup: Any  # doctor.spec.checkup.Checkup
    backend: Any
    ctx: Any  # doctor.modifications.base.ApplyContext
    result: Any  # doctor.results.CheckupResult
    memo: dict[str, Any] = field(default_factory=dict)

    @property
    def requested(self) -> list[MetricGroup]:
        registered = groups()
        return [registered[name] for name in registered if name in self.checkup.metrics]

    @property
    def probing(self) -> bool:
        """Whether this checkup asks for the layer probe's statistics."""
        return self.session.probe is not None and bool({"layer_error", "attention"} & set(self.checkup.metrics))

    def evaluation(self) -> dict[str, Measurement]:
        """ppl, ppl_ratio, nll_delta (and KL statistics when a requested group needs them), from one pass; the
        layer probe rides on the same pass when a requested group needs it."""
        if "evaluation" not in self.memo:
            from doctor.metrics.evaluation import compare_pass
            from doctor.metrics.language import against_baseline

            session, spec = self.session, self.session.eval_spec
            probing = self.probing and "comparison" not in self.memo
            hooks = session.probe.comparing(session.patient.model, self.ctx.undo.originals()) if probing else None
            with hooks if hooks is not None else nullcontext() as comparison:
                current = compare_pass(
                    self.backend, session.windows, session.cache, session.patient.facts.vocab,
                    batch_size=spec.batch_size, with_kl=any(g.evaluation == "kl" for g in self.requested),
                    progress=window_progress(session.progress, f"{self.checkup.id}: measuring",
                                             session.windows.shape[0]),
                )
            if comparison is not None and comparison.complete():  # else the backend ran another model (ONNX)
                self.memo["comparison"] = comparison
            self.memo["evaluation"] = against_baseline(session.base_pass, current, spec.bootstrap, spec.seed)
        return self.memo["evaluation"]

    def from_evaluation(self, group: MetricGroup) -> dict[str, Measurement]:
        """The evaluation pass's measurements that belong to `group`, in the pass's own order."""
        keys = {k.key for k in group.keys}
        return {k: v for k, v in self.evaluation().items() if k in keys}

    def layer_metrics(self) -> dict[str, Measurement]:
        """Per-layer statistics from the probe, merged into the result's layers; the first caller gets them.

        They come from the hooks on the evaluation pass; a pass of the probe's own over its windows only when
        no requested group needs the evaluation pass or the pass ran outside torch; attention entropy (the
        `attention` group) always takes a pass of its own with eager attention, priced separately.
        """
        if "layers" in self.memo or not self.probing:
            return {}
        self.memo["layers"] = True
        probe, model = self.session.probe, self.session.patient.model
        if "evaluation" not in self.memo and any(g.evaluation for g in self.requested):
            self.evaluation()
        comparison = self.memo.get("comparison")
        own_s = 0.0
        if comparison is None:
            start = time.perf_counter()
            with probe.comparing(model, self.ctx.undo.originals()) as comparison:
                probe.run(model)
            own_s = time.perf_counter() - start - comparison.timer.seconds
        entropy_s = None
        entropies = None
        if "attention" in self.checkup.metrics:
            start = time.perf_counter()
            entropies = probe.entropies(model)
            entropy_s = time.perf_counter() - start
        measured = comparison.stats(entropies)
        self.result.layers = merge_layers(self.result.layers, measured)
        out = layer_summary(self.result.layers)
        if is_offloaded(self.session.patient.model):  # the undo log keeps no copy of an offloaded original
            for measurement in out.values():
                measurement.note = ("block errors only: per-linear errors need the original weights in memory, "
                                    "which offloaded layers do not keep")
        unit = self.session.pass_s
        if unit > 0:
            out["layer_probe_passes"] = Measurement(
                value=(comparison.timer.seconds + own_s) / unit,
                note="the layer probe's work (hooks, block replays for the local error"
                     + (", a pass of its own" if own_s else "") + ") in evaluation passes",
            )
            if entropy_s is not None:
                out["attention_probe_passes"] = Measurement(
                    value=entropy_s / unit,
                    note=f"the eager-attention pass for attention entropy ({probe.limit} windows) in evaluation passes",
                )
        return out


def window_progress(progress, label: str, total: int):
    """A per-batch callback that reports "<label> i/N windows": evaluation passes are the long work."""
    done = 0

    def step(count: int) -> None:
        nonlocal done
        done += count
        progress(f"{label} {done}/{total} windows")

    return step


def measure_groups(measuring: Measuring) -> dict[str, Measurement]:
    """Every requested group's measurements while the modification is applied, in registry order."""
    metrics: dict[str, Measurement] = {}
    for group in measuring.requested:
        metrics.update(group.measure_fn()(measuring))
    return metrics


def after_restore(measuring: Measuring) -> dict[str, Measurement]:
    """The measurements of groups that finish on the restored model."""
    metrics: dict[str, Measurement] = {}
    for group in measuring.requested:
        finish = group.after_restore_fn()
        if finish is not None:
            metrics.update(finish(measuring))
    return metrics


def merge_layers(applied: list[LayerStat], measured: list[LayerStat]) -> list[LayerStat]:
    """Measured per-layer error wins `rel_error`; the modification's own numbers move to `extra`."""
    by_layer = {s.layer: s for s in measured}
    for stat in applied:
        target = by_layer.setdefault(stat.layer, LayerStat(layer=stat.layer, name=stat.name))
        if stat.rel_error is not None:
            target.extra["solver_error"] = stat.rel_error
        if stat.sparsity is not None:
            target.sparsity = stat.sparsity
        if stat.seconds is not None:
            target.seconds = stat.seconds
        target.extra.update(stat.extra)
    return [by_layer[k] for k in sorted(by_layer)]


def layer_summary(layers: list[LayerStat]) -> dict[str, Measurement]:
    from doctor.metrics.layerwise import summary

    n = sum(1 for s in layers if s.rel_error is not None)
    return {key: Measurement(value=value, n=n) for key, value in summary(layers).items()}
