"""FP16 and INT8 variants of a bundle's fp32 models (no torch needed).

- ``to_fp16(src, dst)``: ``onnxruntime.transformers.float16.convert_float_to_float16`` with float32 inputs and
  outputs kept (``keep_io_types``), so callers feed the same arrays.
- ``to_int8(src, dst, calib)``: ``onnxruntime.quantization.quantize_static`` in QDQ format (int8 weights per
  channel, int8 activations, MinMax calibration) on ``calib``, a list of feed dicts (e.g. rendered frames).

Both run ``onnx.checker`` on the result. Variants are judged by task metric by the exporter, not by atol.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from microfarm_toolkit import atomic_path

__all__ = ["to_fp16", "to_int8"]


def to_fp16(src: str | Path, dst: str | Path) -> Path:
    import onnx
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    model = onnx.load(str(src))
    # ONNX Runtime's CPU ScatterElements has no fp16 'add' reduction (the CRF's bilateral grid): kept in fp32
    half = convert_float_to_float16(model, keep_io_types=True, disable_shape_infer=False,
                                    op_block_list=[*DEFAULT_OP_BLOCK_LIST, "ScatterElements"])
    _toposort(half.graph)
    dst = Path(dst)
    with atomic_path(dst) as tmp:
        onnx.save_model(half, str(tmp))
    onnx.checker.check_model(str(dst), full_check=True)
    return dst


def _toposort(graph: object) -> None:
    """Reorder ``graph.node`` topologically (the fp16 converter appends its input casts at the end)."""
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}  # type: ignore[attr-defined]
    pending, ordered = list(graph.node), []  # type: ignore[attr-defined]
    while pending:
        rest = []
        for n in pending:
            (ordered if all(i in known for i in n.input) else rest).append(n)
            if ordered and ordered[-1] is n:
                known.update(n.output)
        if len(rest) == len(pending):
            raise ValueError("graph has a cycle or a dangling input; cannot sort it")
        pending = rest
    del graph.node[:]  # type: ignore[attr-defined]
    graph.node.extend(ordered)  # type: ignore[attr-defined]


class _Reader:
    """A CalibrationDataReader over a list of feed dicts."""

    def __init__(self, feeds: Sequence[dict[str, np.ndarray]]) -> None:
        self._it: Iterator[dict[str, np.ndarray]] = iter([{k: np.ascontiguousarray(v, np.float32)
                                                           for k, v in f.items()} for f in feeds])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._it, None)


def to_int8(src: str | Path, dst: str | Path, calib: Sequence[dict[str, np.ndarray]]) -> Path:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if not calib:
        raise ValueError("int8 quantisation needs at least one calibration input")
    CalibrationDataReader.register(_Reader)
    dst = Path(dst)
    with atomic_path(dst.with_suffix(".pre.onnx")) as pre, atomic_path(dst) as tmp:
        try:
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            source = pre
        except Exception:  # pre-processing is an optimisation only
            source = Path(src)
        quantize_static(str(source), str(tmp), _Reader(calib), quant_format=QuantFormat.QDQ,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8, per_channel=True,
                        extra_options={"ActivationSymmetric": False, "WeightSymmetric": True})
    dst.with_suffix(".pre.onnx").unlink(missing_ok=True)
    onnx.checker.check_model(str(dst), full_check=True)
    return dst
