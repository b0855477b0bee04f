"""`--max-memory`, `--device-map` and `--offload-folder`: where accelerate may put the model's weights.

`--max-memory 0=20GiB,1=20GiB,cpu=60GiB` caps each device (GPU index, `cpu`; `disk` takes the rest when an
offload folder is given); sizes are accelerate's (`GiB`, `GB`, `MiB`, `MB`, `KiB`, `KB`, plain bytes). Any of the
three flags switches loading to accelerate's `device_map` (`auto` unless `--device-map` says otherwise), which
spreads the layers over the devices in order and offloads what does not fit to CPU memory or the folder.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from doctor.errors import DoctorError

DEVICE_MAPS = ("auto", "balanced", "balanced_low_0", "sequential")
_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*$")


def parse_size(text: str, flag: str = "--max-memory") -> int:
    """'20GiB' -> bytes; a unit accelerate does not know is an error naming the flag."""
    match = _SIZE.match(text)
    unit = match.group(2).upper() if match else None
    if match is None or unit not in _UNITS:
        raise DoctorError(f"{flag}: {text!r} is not a size (e.g. 20GiB, 512MB, 30MB)")
    return int(float(match.group(1)) * _UNITS[unit])


def parse_max_memory(text: str) -> dict[int | str, int]:
    """'0=20GiB,cpu=60GiB' -> {0: bytes, 'cpu': bytes}; devices are GPU indices, `cpu`, `mps` or `disk`."""
    limits: dict[int | str, int] = {}
    for part in (p for p in text.split(",") if p.strip()):
        device, eq, size = part.partition("=")
        device = device.strip().lower()
        if not eq or not device:
            raise DoctorError(f"--max-memory: {part.strip()!r} is not DEVICE=SIZE (e.g. 0=20GiB,cpu=60GiB)")
        key: int | str = int(device) if device.isdigit() else device
        if isinstance(key, str) and key not in ("cpu", "mps", "disk"):
            raise DoctorError(f"--max-memory: unknown device {device!r} (a GPU index, cpu, mps or disk)")
        if key in limits:
            raise DoctorError(f"--max-memory: {device} is given twice")
        limits[key] = parse_size(size)
    if not limits:
        raise DoctorError("--max-memory: no DEVICE=SIZE given (e.g. 0=20GiB,cpu=60GiB)")
    return limits


@dataclass
class Placement:
    """How the model is loaded: one device (`device_map` None), or spread by accelerate."""

    device_map: str | None = None
    max_memory: dict[int | str, int] | None = None
    offload_folder: Path | None = None

    @property
    def dispatched(self) -> bool:
        return self.device_map is not None

    def load_kwargs(self) -> dict:
        """Keyword arguments for `from_pretrained` (empty on one device)."""
        if not self.dispatched:
            return {}
        kwargs: dict = {"device_map": self.device_map}
        if self.max_memory is not None:
            kwargs["max_memory"] = {k: v for k, v in self.max_memory.items() if k != "disk"}
        if self.offload_folder is not None:
            kwargs["offload_folder"] = str(self.offload_folder)
        return kwargs

    def describe(self) -> str:
        if not self.dispatched:
            return "one device"
        parts = [f"device_map={self.device_map}"]
        if self.max_memory:
            parts.append("max_memory=" + ",".join(f"{k}={_human(v)}" for k, v in self.max_memory.items()))
        if self.offload_folder is not None:
            parts.append(f"offload_folder={self.offload_folder}")
        return " ".join(parts)


def placement_from_flags(device_map: str | None, max_memory: str | None, offload_folder: Path | None,
                         device: str) -> Placement:
    """The placement the three flags ask for; `--device cpu` keeps accelerate off the GPUs."""
    if device_map is None and max_memory is None and offload_folder is None:
        return Placement()
    limits = parse_max_memory(max_memory) if max_memory is not None else None
    if device == "cpu" and limits is not None and any(isinstance(k, int) for k in limits):
        raise DoctorError("--max-memory names a GPU but --device is cpu")
    if device == "cpu":  # accelerate would otherwise fill every visible GPU first
        limits = {"cpu": limits.get("cpu", _cpu_total())} if limits else {"cpu": _cpu_total()}
    if offload_folder is not None:
        offload_folder = Path(offload_folder).expanduser()
        if offload_folder.exists() and not offload_folder.is_dir():
            raise DoctorError(f"--offload-folder {offload_folder}: exists and is not a folder")
        offload_folder.mkdir(parents=True, exist_ok=True)
    return Placement(device_map or "auto", limits, offload_folder)


def _cpu_total() -> int:
    import psutil

    return int(psutil.virtual_memory().available)


def _human(size: int) -> str:
    for unit, scale in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if size >= scale:
            return f"{size / scale:.3g}{unit}"
    return f"{size}B"
