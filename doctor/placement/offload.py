"""Layers whose weights live off the execution device (CPU RAM or disk), brought on one at a time.

A model loaded with accelerate's `device_map` keeps an offloaded module's parameters on the meta device; its
`AlignDevicesHook` reads them from a `weights_map` (CPU tensors, or the checkpoint's safetensors files and
`.dat` memmaps on disk) at each forward and drops them afterwards. A calibration pass needs more than a forward:
it reads and rewrites the weights of one decoder layer while running it many times. `materialized(layer, undo)`
does that the way llm-compressor's sequential pipeline and GPTQModel do: the layer's weights are loaded onto the
execution device once (the hooks' own loading switched off meanwhile), and on exit every weight the undo log
saw change is written back to where the layer lives, into an overlay over the hook's `weights_map` (a CPU tensor,
or a `.dat` file in a scratch folder for disk-offloaded layers). The overlay is installed through the undo log,
so restoring the log puts the original storage back: the checkpoint files themselves are never written, and no
copy of the original weights is kept in memory. A model without offloaded modules passes through untouched.
"""

from __future__ import annotations

import os
import tempfile
import weakref
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass

import torch
from torch import nn

_live = {"now": 0, "peak": 0}  # offloaded layers materialized at once (a check that offloading is one at a time)


@dataclass
class _Offloaded:
    """One module whose hook loads its tensors from `hook.weights_map` onto `hook.execution_device`."""

    module: nn.Module
    hook: object  # accelerate.hooks.AlignDevicesHook

    def tensor_names(self) -> list[str]:
        from accelerate.utils import named_module_tensors

        return [name for name, _ in named_module_tensors(self.module, include_buffers=self.hook.offload_buffers,
                                                          recurse=self.hook.place_submodules,
                                                          remove_non_persistent=True)]


def _align_hooks(module: nn.Module) -> list:
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return []
    return list(getattr(hook, "hooks", [hook]))  # a SequentialHook holds several


def offloaded_modules(module: nn.Module) -> list[_Offloaded]:
    """Modules under `module` (itself included) whose tensors are offloaded by an accelerate hook."""
    found = []
    for sub in module.modules():
        for hook in _align_hooks(sub):
            if getattr(hook, "offload", False) and getattr(hook, "weights_map", None) is not None:
                found.append(_Offloaded(sub, hook))
    return found


def is_offloaded(model: nn.Module) -> bool:
    return bool(offloaded_modules(model))


def execution_device(model: nn.Module) -> torch.device:
    """Where the model's inputs go: the input embedding's execution device (its weight may be on meta)."""
    embed = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    for hook in _align_hooks(embed) if embed is not None else []:
        if getattr(hook, "execution_device", None) is not None:
            return torch.device(hook.execution_device)
    if embed is not None and embed.weight.device.type != "meta":
        return embed.weight.device
    for p in model.parameters():
        if p.device.type != "meta":
            return p.device
    return torch.device("cpu")


# leaf modifications that only read and rewrite existing weights of a block, or none: these work on offloaded
# layers (weights brought on one layer at a time); anything that builds, copies or reshapes modules does not
_OFFLOAD_SAFE = {"quantize": None, "decode": None, "remove_layers": None, "prune": {"unstructured", "nm"}}


def check_offload_support(modification, model: nn.Module) -> None:
    """Refuse, naming the kind, a modification that cannot run on a model with offloaded layers."""
    if not is_offloaded(model):
        return
    from doctor.errors import ModificationError

    steps = [modification]
    while steps:
        leaf = steps.pop()
        if getattr(leaf, "kind", None) == "compose":
            steps.extend(leaf.steps)
            continue
        allowed = _OFFLOAD_SAFE.get(leaf.kind, ())
        structure = getattr(leaf, "structure", None)
        if allowed == () or (allowed is not None and structure not in allowed):
            what = leaf.kind + (f" (structure {structure})" if structure else "")
            raise ModificationError(f"{what} cannot run on a model with offloaded layers (--max-memory, "
                                    "--offload-folder): it builds or reshapes modules whose weights are not in "
                                    "memory; examine it on a device that holds the whole model")


def module_device(module: nn.Module) -> torch.device:
    """Where a module computes: its hooks' execution device when dispatched, else its first parameter's device."""
    for sub in module.modules():
        for hook in _align_hooks(sub):
            if getattr(hook, "execution_device", None) is not None:
                return torch.device(hook.execution_device)
    return next((p.device for p in module.parameters() if p.device.type != "meta"), torch.device("cpu"))


def peak_materialized() -> int:
    """The most offloaded layers materialized at the same time since `reset_peak()`."""
    return _live["peak"]


def reset_peak() -> None:
    _live["peak"] = _live["now"]


class Overlay(Mapping):
    """A module's `weights_map` with some tensors replaced (by a CPU tensor or a `.dat` file); the rest as before."""

    def __init__(self, base: Mapping, scratch: str | None) -> None:
        self.base = base
        self.scratch = scratch  # folder for disk-offloaded replacements; None: keep them in CPU memory
        self.written: dict[str, torch.Tensor | tuple[str, dict]] = {}

    def __getitem__(self, key: str) -> torch.Tensor:
        value = self.written.get(key)
        if value is None:
            return self.base[key]
        if isinstance(value, torch.Tensor):
            return value
        from accelerate.utils.offload import load_offloaded_weight

        path, info = value
        return load_offloaded_weight(path, info)

    def __iter__(self):
        return iter(self.base)

    def __len__(self) -> int:
        return len(self.base)

    def __contains__(self, key: object) -> bool:
        return key in self.written or key in self.base

    def put(self, key: str, tensor: torch.Tensor) -> None:
        tensor = tensor.detach().to("cpu", copy=True)
        if self.scratch is None:
            self.written[key] = tensor
            return
        from accelerate.utils.offload import offload_weight

        handle, path = tempfile.mkstemp(suffix=".dat", dir=self.scratch)
        os.close(handle)
        name = os.path.basename(path)[: -len(".dat")]
        index = offload_weight(tensor, name, self.scratch, index={})
        self.written[key] = (path, index[name])
        weakref.finalize(self, _remove, path)


def _remove(path: str) -> None:
    with suppress(OSError):
        os.remove(path)


def _storage(hook) -> tuple[Mapping, str]:
    """The hook's underlying weights (accelerate's OffloadedWeightsLoader, or a dict) and its key prefix."""
    dataset, prefix = hook.weights_map, ""
    while isinstance(dataset, Overlay):
        dataset = dataset.base
    if hasattr(dataset, "prefix"):  # accelerate's PrefixedDataset
        prefix, dataset = dataset.prefix, dataset.dataset
    return dataset, prefix


def _on_disk(hook, name: str) -> bool:
    """Whether the hook reads `name` from disk (an index entry) rather than from a CPU state dict."""
    dataset, prefix = _storage(hook)
    state = dataset if isinstance(dataset, dict) else getattr(dataset, "state_dict", None)
    return state is None or f"{prefix}{name}" not in state


def _scratch_dir(hook) -> str:
    """A folder for rewritten disk-offloaded weights: beside the offload folder (the disk chosen for weights)."""
    base = getattr(_storage(hook)[0], "save_folder", None) or tempfile.gettempdir()
    folder = os.path.join(base, f"model-doctor-rewritten-{os.getpid()}")
    os.makedirs(folder, exist_ok=True)
    return folder


def _write_back(entry: _Offloaded, name: str, value: torch.Tensor, undo) -> None:
    hook = entry.hook
    if not isinstance(hook.weights_map, Overlay):
        undo.set_attr(hook, "weights_map", Overlay(hook.weights_map, None))
    overlay = hook.weights_map
    if overlay.scratch is None and _on_disk(hook, name):
        overlay.scratch = _scratch_dir(hook)
    overlay.put(name, value)


@contextmanager
def materialized(layer: nn.Module, undo=None) -> Iterator[None]:
    """The offloaded weights of `layer` as real tensors on their execution device for the duration.

    With `undo` (a modification's log), each tensor the log saved is written back to the layer's storage on exit
    (through the log, so restoring it brings the original back) and the log's own copy of it is dropped.
    Without `undo` the weights are only read. A layer with nothing offloaded is left alone.
    """
    entries = offloaded_modules(layer)
    if not entries:
        yield
        return
    from accelerate.utils import set_module_tensor_to_device

    loaded: list[tuple[_Offloaded, str, torch.Tensor]] = []
    _live["now"] += 1
    _live["peak"] = max(_live["peak"], _live["now"])
    try:
        with ExitStack() as stack:
            for entry in entries:
                device = entry.hook.execution_device
                for name in entry.tensor_names():
                    value = entry.hook.weights_map[name]
                    if value.device == torch.device(device):  # a CPU state dict's own tensor: edits stay local
                        value = value.clone()
                    set_module_tensor_to_device(entry.module, name, device, value=value)
                    loaded.append((entry, name, _get(entry.module, name)))
                stack.enter_context(_hook_offload_off(entry.hook))
            yield
            if undo is not None:
                for entry, name, tensor in loaded:
                    if undo.saved(tensor):
                        _write_back(entry, name, tensor, undo)
                        undo.release(tensor, entry.module, name)
    finally:
        for entry, name, _ in loaded:
            set_module_tensor_to_device(entry.module, name, "meta")
        _live["now"] -= 1


def _get(module: nn.Module, name: str) -> torch.Tensor:
    owner, _, leaf = name.rpartition(".")
    return getattr(module.get_submodule(owner) if owner else module, leaf)


@contextmanager
def _hook_offload_off(hook) -> Iterator[None]:
    """The hook leaves the (already loaded) weights alone while a layer is run many times."""
    hook.offload = False
    try:
        yield
    finally:
        hook.offload = True


def offloaded_weights(model: nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of every offloaded tensor, read from storage one at a time (nothing is kept)."""
    for name, (entry, local) in _offloaded_index(model).items():
        yield name, entry.hook.weights_map[local]


def _offloaded_index(model: nn.Module) -> dict[str, tuple[_Offloaded, str]]:
    names = {id(m): n for n, m in model.named_modules()}
    index = {}
    for entry in offloaded_modules(model):
        prefix = names[id(entry.module)]
        for name in entry.tensor_names():
            index[f"{prefix}.{name}" if prefix else name] = (entry, name)
    return index


def state_items(model: nn.Module, by_name: bool = False) -> Iterator[tuple[str, torch.Tensor]]:
    """The state dict (in name order if `by_name`) with offloaded tensors read from their storage, one at a time."""
    index = _offloaded_index(model)
    items = model.state_dict().items()
    for name, tensor in sorted(items, key=lambda item: item[0]) if by_name else items:
        if tensor.device.type == "meta" and name in index:
            entry, local = index[name]
            tensor = entry.hook.weights_map[local]
        yield name, tensor
