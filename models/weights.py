"""Weights as safetensors with the model's config inside the file's metadata (no pickle anywhere).

``save_weights(path, module, config, kind)`` writes atomically; the metadata holds ``kind`` (e.g.
"autoencoder"), ``config`` (JSON) and ``format_version``. ``load_weights(path, kind, expected_config)``
returns ``(state_dict, config)`` and raises a ``WeightsError`` subclass whose message says what to do.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from microfarm_toolkit import atomic_path

__all__ = ["WeightsError", "WeightsNotFoundError", "WeightsMismatchError", "save_weights", "load_weights",
           "read_metadata", "load_into"]

FORMAT_VERSION = "1"


class WeightsError(RuntimeError):
    """A weights file that cannot be used; the message says how to fix it."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    pass


class WeightsMismatchError(WeightsError, ValueError):
    """Wrong kind, config or tensors for the model it is loaded into."""


def save_weights(path: str | Path, module: nn.Module | dict[str, torch.Tensor], config: dict[str, Any],
                 kind: str, extra: dict[str, Any] | None = None) -> Path:
    """Write ``module``'s state dict (contiguous float tensors) with ``config`` as JSON metadata; returns path."""
    state = module.state_dict() if isinstance(module, nn.Module) else module
    tensors = {k: v.detach().cpu().contiguous() for k, v in state.items()}
    meta = {"kind": kind, "config": json.dumps(config, sort_keys=True), "format_version": FORMAT_VERSION}
    if extra:
        meta["extra"] = json.dumps(extra, sort_keys=True)
    path = Path(path)
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return path


def read_metadata(path: str | Path) -> dict[str, Any]:
    """``{"kind", "config" (dict), "format_version", "extra" (dict)}`` of a weights file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise WeightsNotFoundError(f"weights file {str(path)!r} does not exist")
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except (SafetensorError, OSError) as e:
        raise WeightsError(f"{str(path)!r} is not a readable safetensors file ({e})") from None
    if "config" not in meta or "kind" not in meta:
        raise WeightsMismatchError(f"{str(path)!r} has no microfarm metadata (kind/config); save it with "
                                   "models.weights.save_weights")
    return {"kind": meta["kind"], "config": json.loads(meta["config"]),
            "format_version": meta.get("format_version", ""), "extra": json.loads(meta.get("extra", "{}"))}


def load_weights(path: str | Path, kind: str | None = None,
                 expected_config: dict[str, Any] | None = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Tensors and config of ``path``; checks ``kind`` and (if given) that the config equals ``expected_config``."""
    meta = read_metadata(path)
    if kind is not None and meta["kind"] != kind:
        raise WeightsMismatchError(f"{str(path)!r} holds {meta['kind']!r} weights, expected {kind!r}")
    if expected_config is not None and meta["config"] != expected_config:
        diff = sorted(k for k in set(meta["config"]) | set(expected_config)
                      if meta["config"].get(k) != expected_config.get(k))
        raise WeightsMismatchError(
            f"{str(path)!r} was saved with a different config (differs in {', '.join(diff)}: file "
            f"{ {k: meta['config'].get(k) for k in diff} }, expected { {k: expected_config.get(k) for k in diff} }); "
            "retrain it with the expected config or use matching settings")
    return load_file(str(path)), meta["config"]


def load_into(module: nn.Module, path: str | Path, kind: str | None = None,
              expected_config: dict[str, Any] | None = None) -> dict[str, Any]:
    """Load ``path`` into ``module`` strictly; returns the file's config."""
    state, config = load_weights(path, kind, expected_config)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0:2]
        raise WeightsMismatchError(f"{str(path)!r} does not fit {type(module).__name__}: {' '.join(first)}") from None
    return config
