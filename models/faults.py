"""Stuck-at faults of deployed weights (Romero et al. 2019: NVM devices that can be read but no longer programmed).

A *weight* is a float initializer with more than one element that feeds a weight input of a ``Conv`` /
``ConvTranspose`` (input 1), ``Gemm`` or ``MatMul`` (inputs 0 and 1) node of a model's main graph; with
``biases=True`` also the bias of ``Conv`` / ``ConvTranspose`` / ``Gemm`` (input 2). BatchNormalization parameters,
normalisation constants and shape tensors are never faulted. A fault hits a weight as the ONNX file stores it (the
exporter folds BatchNorm into the preceding conv, so the segmenter's conv weights are the folded ones).

The promise: at rate r, a model with N weights gets exactly ``fault_count(N, r) = floor(r * N + 0.5)`` stuck
weights, the first ones of a permutation of its N weights seeded by (seed, model name). Draws are therefore nested:
the stuck set at a lower rate is a subset of the one at a higher rate with the same seed. Modes (``FAULT_MODES``):

- ``zero``: stuck at the lowest conductance, the weight reads 0;
- ``high``: stuck at the highest conductance, the weight reads its tensor's (fault-free) max |w| with its own sign
  kept (a zero weight reads +max): the device that carries the weight's sign is stuck on;
- ``high-pos``: the weight reads +max |w| whatever its sign (the positive device of a differential pair stuck on).

A weight that already holds its stuck value is stuck but unchanged; ``changed`` counts the values that differ.
numpy, onnx and onnxruntime only (no torch).
"""

from __future__ import annotations

import copy
import hashlib
import json
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from microfarm_toolkit import atomic_write_bytes, atomic_write_json
from models.runtime import BundleError, Runtime, verify_bundle

__all__ = ["FAULT_MODES", "LEARNED_MODELS", "FAULTS_KEY", "FaultError", "fault_count", "check_fault", "weight_names",
           "fault_model", "write_faulty_bundle", "FaultyBundle"]

FAULT_MODES = ("zero", "high", "high-pos")
LEARNED_MODELS = ("encoder", "forward", "inverse", "guide", "segment")  # crf.onnx holds fixed filters, not weights
FAULTS_KEY = "microfarm.faults"
_WEIGHT_INPUTS = {"Conv": (1,), "ConvTranspose": (1,), "Gemm": (0, 1), "MatMul": (0, 1)}
_BIAS_INPUTS = {"Conv": (2,), "ConvTranspose": (2,), "Gemm": (2,)}


class FaultError(ValueError):
    """A fault request that cannot be met (rate, mode, output folder); the message says why."""


def fault_count(total: int, rate: float) -> int:
    """The number of stuck weights among ``total`` at ``rate`` in (0, 1]: floor(rate * total + 0.5)."""
    return int(np.floor(rate * total + 0.5))


def check_fault(rate: float, mode: str) -> None:
    """Raise ``FaultError`` unless 0 < rate <= 1 and ``mode`` is one of ``FAULT_MODES``."""
    if not 0.0 < float(rate) <= 1.0:  # NaN fails too
        raise FaultError(f"fault rate must be in (0, 1], got {rate}")
    if mode not in FAULT_MODES:
        raise FaultError(f"fault mode {mode!r} is unknown; choose one of: {', '.join(FAULT_MODES)}")


def weight_names(model: onnx.ModelProto, biases: bool = False) -> list[str]:
    """The names of ``model``'s weight initializers (see the module docstring), in initializer order."""
    inits = {i.name: i for i in model.graph.initializer}
    used: set[str] = set()
    for node in model.graph.node:
        slots = _WEIGHT_INPUTS.get(node.op_type, ()) + (_BIAS_INPUTS.get(node.op_type, ()) if biases else ())
        used.update(node.input[k] for k in slots if k < len(node.input) and node.input[k] in inits)
    out = []
    for name in (i.name for i in model.graph.initializer):
        if name in used:
            a = numpy_helper.to_array(inits[name])
            if np.issubdtype(a.dtype, np.floating) and a.size > 1:
                out.append(name)
    return out


def fault_model(model: onnx.ModelProto, rate: float, mode: str, seed: int, key: str = "",
                biases: bool = False) -> tuple[onnx.ModelProto, dict[str, Any]]:
    """A copy of ``model`` with ``fault_count(N, rate)`` of its N weights stuck (``model`` is not modified).

    ``key`` (the model's name in its bundle) and ``seed`` seed the permutation. Returns (the faulty model, a record:
    rate, mode, seed, biases, weights = N, tensors, faulted = the stuck count, changed = values that differ).
    """
    check_fault(rate, mode)
    names = weight_names(model, biases)
    inits = {i.name: i for i in model.graph.initializer}
    arrays = [numpy_helper.to_array(inits[n]) for n in names]
    sizes = np.array([a.size for a in arrays], np.int64)
    total = int(sizes.sum())
    k = fault_count(total, rate)
    rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, zlib.crc32(key.encode())])
    stuck = np.sort(rng.permutation(total)[:k]) if total else np.zeros(0, np.int64)
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    out = onnx.ModelProto()
    out.CopyFrom(model)
    new_inits = {i.name: i for i in out.graph.initializer}
    changed = 0
    for t, (name, a) in enumerate(zip(names, arrays, strict=True)):
        idx = stuck[np.searchsorted(stuck, bounds[t]):np.searchsorted(stuck, bounds[t + 1])] - bounds[t]
        if not len(idx):
            continue
        flat = a.ravel().copy()
        top = np.abs(flat).max()
        if mode == "zero":
            value = np.zeros(len(idx), flat.dtype)
        elif mode == "high":
            value = np.where(flat[idx] >= 0, top, -top).astype(flat.dtype)
        else:
            value = np.full(len(idx), top, flat.dtype)
        changed += int((flat[idx] != value).sum())
        flat[idx] = value
        new_inits[name].CopyFrom(numpy_helper.from_array(flat.reshape(a.shape), name))
    record = {"rate": float(rate), "mode": mode, "seed": int(seed), "biases": bool(biases), "weights": total,
              "tensors": len(names), "faulted": k, "changed": changed}
    return out, record


def _stamp(model: onnx.ModelProto, record: dict[str, Any]) -> None:
    """Record the faults in the model's ``metadata_props`` under ``FAULTS_KEY`` (the contract is kept)."""
    for p in model.metadata_props:
        if p.key == FAULTS_KEY:
            p.value = json.dumps(record, sort_keys=True)
            return
    model.metadata_props.add(key=FAULTS_KEY, value=json.dumps(record, sort_keys=True))


def write_faulty_bundle(src: str | Path, dst: str | Path, rate: float, mode: str, seed: int = 0,
                        models: Sequence[str] = LEARNED_MODELS, biases: bool = False) -> dict[str, Any]:
    """Write a faulty COPY of the bundle ``src`` (verified first: its hashes must match) into ``dst``.

    The models named in ``models`` get stuck weights (``fault_model``); the others are copied byte for byte. The
    copy's ``manifest.json`` (written last) carries the new sha256s and sizes and a ``faults`` record, so that
    ``Runtime(dst)`` verifies it like any bundle; fp16 / int8 variants are left out of the copy (they would still hold
    fault-free weights). ``src`` is only read. Returns the copy's manifest.
    """
    src, dst = Path(src), Path(dst)
    check_fault(rate, mode)
    manifest = verify_bundle(src)
    if dst.resolve() == src.resolve():
        raise FaultError(f"the faulty copy must go to another folder than the bundle {str(src)!r}")
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise FaultError(f"{str(dst)!r} is not empty; give a new folder for the faulty copy")
    entries, records = {}, {}
    for name, entry in manifest["models"].items():
        data = (src / entry["file"]).read_bytes()
        if name in models:
            faulty, records[name] = fault_model(onnx.load_from_string(data), rate, mode, seed, name, biases)
            _stamp(faulty, records[name])
            data = faulty.SerializeToString()
        atomic_write_bytes(dst / entry["file"], data)
        e = {k: v for k, v in entry.items() if k != "variants"}
        e.update(sha256=hashlib.sha256(data).hexdigest(), size_bytes=len(data))
        entries[name] = e
    out = {k: v for k, v in manifest.items() if k != "quantization"}
    out["models"] = entries
    out["faults"] = {"source_bundle": str(src), "rate": float(rate), "mode": mode, "seed": int(seed),
                     "biases": bool(biases), "models": records}
    atomic_write_json(dst / "manifest.json", out)
    return out


class FaultyBundle:
    """A verified bundle (``Runtime``: hashes and contracts checked) whose models are faulted in memory.

    ``runtime(rate, mode, seed)`` returns a ``Runtime`` with the same typed calls (``encode_rgb``, ``inverse``,
    ``guide``, ``segment``, ...) whose sessions run faulty copies of ``models`` (default: the ``LEARNED_MODELS`` in
    the bundle; ONNX Runtime sessions built from the faulty model bytes, ``threads`` intra-op threads, CPU) and the
    fault records per model; nothing is written.
    """

    def __init__(self, bundle: str | Path, models: Sequence[str] | None = None, biases: bool = False,
                 threads: int = 1) -> None:
        import onnxruntime as ort

        self.rt = Runtime(bundle, providers="cpu", threads=threads, warmup=False)
        self.biases = biases
        if not models:
            models = [m for m in LEARNED_MODELS if m in self.rt.sessions]
        unknown = [m for m in models if m not in self.rt.sessions]
        if unknown:
            raise BundleError(f"the bundle {str(bundle)!r} has no {unknown[0]} model (has: "
                              f"{', '.join(self.rt.sessions)})")
        self.models = {}
        for m in models:  # the bytes that were verified: re-checked against the manifest as they are parsed
            data = (self.rt.folder / self.rt.files[m]).read_bytes()
            if hashlib.sha256(data).hexdigest() != self.rt.entry(m)["sha256"]:
                raise BundleError(f"{m}: {self.rt.files[m]!r} changed while the bundle was opened; open it again")
            self.models[m] = onnx.load_from_string(data)
        self.options = ort.SessionOptions()
        self.options.log_severity_level = 3
        self.options.intra_op_num_threads = int(threads)
        self.options.add_session_config_entry("session.intra_op.allow_spinning", "0")

    def weights(self) -> dict[str, int]:
        """The number of weights per faulted model (the N of ``fault_count``)."""
        out = {}
        for m, p in self.models.items():
            names = set(weight_names(p, self.biases))
            out[m] = int(sum(int(np.prod(i.dims)) for i in p.graph.initializer if i.name in names))
        return out

    def runtime(self, rate: float, mode: str, seed: int) -> tuple[Runtime, dict[str, dict[str, Any]]]:
        """A ``Runtime`` running the models faulted at ``rate`` / ``mode`` / ``seed``, and the fault records."""
        import onnxruntime as ort

        rt = copy.copy(self.rt)
        rt.sessions = dict(self.rt.sessions)
        records = {}
        for name, model in self.models.items():
            faulty, records[name] = fault_model(model, rate, mode, seed, name, self.biases)
            rt.sessions[name] = ort.InferenceSession(faulty.SerializeToString(), sess_options=self.options,
                                                     providers=["CPUExecutionProvider"])
        return rt, records
