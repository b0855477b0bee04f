"""PyTorch backend: one pass through the decoder body, then the output layer chunk by chunk."""

from __future__ import annotations

from collections.abc import Iterator

import torch

from doctor.placement.offload import execution_device


class TorchBackend:
    name = "torch"

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model
        self.provider = str(execution_device(model).type)
        cfg = model.config
        # models that post-process logits (soft-capping, scaling) go through the full forward pass
        self._plain_head = not any(
            getattr(cfg, attr, None) for attr in ("final_logit_softcapping", "logit_scale", "output_multiplier")
        )

    @torch.no_grad()
    def logits_chunks(self, ids: torch.Tensor, chunk: int) -> Iterator[tuple[int, torch.Tensor]]:
        ids = ids.to(execution_device(self.model))  # a dispatched model's hooks move it on from there
        head = self.model.get_output_embeddings()
        if not self._plain_head or head is None:
            logits = self.model(input_ids=ids, use_cache=False).logits
            for start in range(0, ids.shape[1], chunk):
                yield start, logits[:, start : start + chunk].float()
            return
        hidden = self.model.base_model(input_ids=ids, use_cache=False).last_hidden_state  # (B, T, H)
        for start in range(0, ids.shape[1], chunk):
            yield start, head(hidden[:, start : start + chunk]).float()  # (B, t, V)
