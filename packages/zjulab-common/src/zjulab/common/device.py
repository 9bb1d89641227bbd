"""Resolve ``device`` and ``dtype`` arguments the same way in every library."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Literal, Union

from zjulab.common.deps import require
from zjulab.common.errors import ConfigError, DeviceNotAvailableError

if TYPE_CHECKING:
    import torch

__all__ = ["DeviceLike", "DtypeLike", "resolve_device", "resolve_dtype"]

logger = logging.getLogger(__name__)

# Plain aliases that need no torch at import: torch stays out of every torch-free install.
DeviceLike = Union[str, "torch.device", None]
DtypeLike = Union[
    Literal["auto", "float32", "fp32", "float16", "fp16", "half", "bfloat16", "bf16"],
    str,
    "torch.dtype",
    None,
]

_DTYPE_NAMES: dict[str, str] = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
}


def _torch() -> Any:
    return require("torch", feature="device and dtype resolution")


def _mps_available() -> bool:
    torch = _torch()
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(device: DeviceLike = "auto") -> torch.device:
    """Turn a user's device argument into a ``torch.device`` that exists here.

    ``"auto"`` (or ``None``) picks ``cuda`` when a GPU is visible, then ``mps``, then ``cpu``.
    An explicit device is checked: ``"cuda:1"`` on a one-GPU machine raises.

    Args:
        device: ``"auto"``, ``None``, a device string (``"cpu"``, ``"cuda"``, ``"cuda:1"``,
            ``"mps"``) or a ``torch.device``.

    Returns:
        The resolved device; ``"cuda"`` without an index becomes ``cuda:0``.

    Raises:
        DeviceNotAvailableError: The device is not present on this machine.
        ConfigError: The string is not a device name.
        MissingDependencyError: torch is not installed (``pip install 'zjulab-common[torch]'``).
    """
    torch = _torch()
    if device is None or (isinstance(device, str) and device.strip().lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda", 0)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device).strip())
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device={device!r} is not a device name (try 'cpu', 'cuda:0')") from exc
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceNotAvailableError(
                f"device={device!r} requested but CUDA is not available on this machine"
            )
        index = 0 if dev.index is None else dev.index
        count = torch.cuda.device_count()
        if index >= count:
            raise DeviceNotAvailableError(
                f"device={device!r} requested but only {count} CUDA device(s) are visible"
            )
        return torch.device("cuda", index)
    if dev.type == "mps":
        if not _mps_available():
            raise DeviceNotAvailableError(f"device={device!r} requested but MPS is not available")
        return dev
    raise DeviceNotAvailableError(f"device type {dev.type!r} is not supported")


def resolve_dtype(dtype: DtypeLike = "auto", device: DeviceLike = "auto") -> torch.dtype:
    """Turn a user's dtype argument into a ``torch.dtype`` suited to ``device``.

    ``"auto"`` gives bfloat16 on CUDA devices that support it, float16 on older CUDA devices
    and on MPS, and float32 on CPU (CPU half precision is slow and lossy for small models).

    Args:
        dtype: ``"auto"``, ``None`` (same as auto), a name such as ``"bf16"`` / ``"float16"``,
            or a ``torch.dtype``.
        device: The device the tensors will live on (resolved with :func:`resolve_device`).

    Returns:
        The resolved floating-point dtype.

    Raises:
        ConfigError: Unknown dtype name, a non-floating dtype, or bfloat16 requested on a CUDA
            device without bf16 support.
    """
    torch = _torch()
    dev = resolve_device(device)
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    elif dtype is None or str(dtype).strip().lower() == "auto":
        if dev.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if dev.type == "mps":
            return torch.float16
        return torch.float32
    else:
        key = str(dtype).strip().lower().removeprefix("torch.")
        if key not in _DTYPE_NAMES:
            raise ConfigError(f"dtype={dtype!r} is not one of {sorted(_DTYPE_NAMES)} or 'auto'")
        resolved = getattr(torch, _DTYPE_NAMES[key])
    if not resolved.is_floating_point:
        raise ConfigError(f"dtype={dtype!r} is not a floating-point dtype")
    if resolved == torch.bfloat16 and dev.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"dtype=bfloat16 is not supported on {dev}; use 'float16'")
    return resolved
