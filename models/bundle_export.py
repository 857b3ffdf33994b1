"""The ONNX bundle of `microfarm export` (``robot.export_cli``): every model and the mean-field CRF, checked against
torch.

Bundle (``--out``, default ``runs/export/<N>/``):

- ``encoder.onnx``, ``forward.onnx``, ``inverse.onnx`` from an exploration run (``--explore-run DIR``: its
  ``weights/``, the SOM goals from ``checkpoint/``, the motor contract from ``export/manifest.json``);
- ``guide.onnx``, ``segment.onnx`` from the segmenter weights (``--segmenter``, default the shipped file);
- ``crf.onnx``: ``models.crf.MeanFieldCRF`` with the ``--crf-*`` parameters (default ``CRFParams()``);
- ``manifest.json``: per model file, sha256, inputs/outputs (named dynamic axes), dtypes, preprocessing,
  versions, config and training config; the same contract in each model's ``metadata_props``. ``--canonical``
  exports the MLPs in canonical form (``models.canonical``; ``"canonical": true`` in their training record).

Each model passes ``onnx.checker`` (full check) and ONNX Runtime matches torch (atol 1e-4, rtol 1e-3) on
random inputs, a second size, and real frames: the caller's ``FrameSource`` (``models.export_checks``; the
command passes frames rendered by ``sim.sample_frames``, so that ``models`` imports nothing of ``sim``). ``--fp16`` /
``--int8 --calib N`` add ``<name>.fp16.onnx`` / ``<name>.int8.onnx`` judged by task metric (segmentation mIoU may
drop by at most 0.5 point, reach and forward error may grow by at most 5%); a variant outside that is left out
(recorded in the manifest) and the runtime then uses fp32 for that model (``models.export_variants``).

``write_bundle`` runs the steps in order: check the config, load the sources (``models.export_sources``), export the
curiosity models, render the segmentation frames, export guide/segment, export the CRF, the variants, the manifest.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np

from microfarm_toolkit import UsageError, next_run_dir
from models.export_checks import FrameSource, to_nchw
from models.export_sources import DEFAULT_SEGMENTER, config_hash, load_explore_run
from models.export_variants import quantized_variants
from models.flags import CRFFlags

__all__ = ["ExportConfig", "write_bundle", "DEFAULT_SEGMENTER"]


def _f(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class ExportConfig(CRFFlags):
    """Export every model (and the CRF) to an ONNX bundle, checked against torch."""

    out: Path | None = _f(None, "bundle folder (default runs/export/<N>)")
    explore_run: Path | None = _f(None, "exploration run folder: encoder/forward/inverse + SOM goals")
    canonical: bool = _f(False, "forward/inverse MLPs in canonical form (models.canonical: same function)")
    segmenter: Path | None = _f(None, "segmenter weights (default models/weights/segmenter.safetensors)")
    segmentation: bool = _f(True, "export guide/segment (--no-segmentation leaves them out)")
    crf: bool = _f(True, "export crf.onnx (--no-crf leaves it out)")
    imgsz: int = _f(256, "segmentation input side (the runtime's default; the models stay dynamic)")
    fp16: bool = _f(False, "also write fp16 variants (onnxruntime.transformers.float16)")
    int8: bool = _f(False, "also write int8 variants (quantize_static, QDQ, calibrated on rendered frames)")
    calib: int = _f(32, "rendered frames for int8 calibration")
    eval_frames: int = _f(24, "rendered frames for the parity and task-metric checks")
    fixed_shape: bool = _f(False, "static shapes (batch 1, imgsz x imgsz) for TensorRT instead of dynamic axes")
    seed: int = _f(0, "seed of the rendered frames and random inputs")


def write_bundle(cfg: ExportConfig, frames: FrameSource, log: Any = print) -> Path:
    """Write the bundle described by ``cfg``, its check frames from ``frames``; returns its folder."""
    import torch

    seg_path = _check(cfg)
    explore = load_explore_run(cfg.explore_run) if cfg.explore_run is not None else None
    if explore is not None and cfg.canonical:
        from models.canonical import canonical_explore

        explore = {**canonical_explore(explore), "training": {**explore["training"], "canonical": True}}
    net, seg_extra = _load_segmenter(seg_path)
    out = next_run_dir("export", cfg.out)
    torch.manual_seed(cfg.seed)
    job = _Job(cfg, out, torch.Generator().manual_seed(cfg.seed), log)
    t0 = time.perf_counter()
    feat = _export_curiosity(job, explore, frames) if explore is not None else None
    seg_data = None
    if net is not None or cfg.crf:
        log(f"rendering {cfg.eval_frames} segmentation frames ({job.size}x{job.size})")
        seg_data = frames.segmentation(job.size, cfg.eval_frames, cfg.seed + 2)
    from models.export_seg import as_tensor

    real_q = as_tensor(to_nchw(seg_data[0][:job.batch])) if seg_data is not None else None
    probs_real = None
    if net is not None:
        assert seg_data is not None and real_q is not None
        probs_real = _export_segmentation(job, net, seg_path, seg_extra, seg_data, real_q)
    if cfg.crf:
        assert real_q is not None
        _export_crf(job, real_q, probs_real)
    if cfg.fp16 or cfg.int8:
        job.extra["quantization"] = quantized_variants(cfg, out, job.entries, feat, seg_data, frames, log)
    _write_manifest(job)
    log(f"exported {', '.join(job.entries)} in {time.perf_counter() - t0:.1f} s -> {out}")
    return out


def _check(cfg: ExportConfig) -> Path | None:
    """The segmenter weights to export (None with ``--no-segmentation``); a one-line ``UsageError`` for a bad flag."""
    seg_path = None if not cfg.segmentation else Path(cfg.segmenter or DEFAULT_SEGMENTER)
    if seg_path is not None and not seg_path.is_file():
        raise UsageError(f"no segmenter weights at {str(seg_path)!r}; pass --segmenter FILE, train them with "
                         "`microfarm train-segmenter`, or pass --no-segmentation")
    if cfg.canonical and cfg.explore_run is None:
        raise UsageError("--canonical needs --explore-run (it puts the forward/inverse MLPs in canonical form)")
    if cfg.explore_run is None and seg_path is None and not cfg.crf:
        raise UsageError("nothing to export: give --explore-run and/or a segmenter, or drop --no-crf")
    if cfg.imgsz < 32 or cfg.imgsz % 16:
        raise UsageError(f"--imgsz must be a multiple of 16 and >= 32, got {cfg.imgsz}")
    if cfg.int8 and cfg.calib < 1:
        raise UsageError(f"--calib must be >= 1 with --int8, got {cfg.calib}")
    if cfg.eval_frames < 2:
        raise UsageError(f"--eval-frames must be >= 2, got {cfg.eval_frames}")
    return seg_path


def _load_segmenter(seg_path: Path | None) -> tuple[Any, dict[str, Any]]:
    """The guided net of ``seg_path`` and its training record (None, {} without one)."""
    if seg_path is None:
        return None, {}
    from models.guided_net import load_guided_net
    from models.weights import WeightsError

    try:
        return load_guided_net(seg_path)
    except WeightsError as e:
        raise UsageError(f"cannot load segmenter {str(seg_path)!r}: {e}") from None


@dataclasses.dataclass
class _Job:
    """A bundle being written: where, the seeded generator every random input comes from (in a fixed order), the
    manifest entries so far and its extra fields."""

    cfg: ExportConfig
    out: Path
    gen: Any  # torch.Generator
    log: Any
    entries: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        from models.export_seg import versions

        self.extra = {"versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                      "fixed_shape": self.cfg.fixed_shape}

    @property
    def size(self) -> int:
        """The segmentation input side."""
        return self.cfg.imgsz

    @property
    def batch(self) -> int:
        """The example batch (>= 2 keeps the batch axis dynamic; 1 with ``--fixed-shape``)."""
        return 1 if self.cfg.fixed_shape else 2

    def dyn(self, spec: dict[str, dict[int, str]]) -> dict[str, dict[int, str]]:
        """The dynamic axes ``spec``, or none with ``--fixed-shape``."""
        return {} if self.cfg.fixed_shape else spec


def _export_curiosity(job: _Job, explore: dict[str, Any], frames: FrameSource) -> tuple[np.ndarray, ...]:
    """encoder.onnx, forward.onnx, inverse.onnx, checked on frames of the run's bed; returns (preprocessed frames,
    motors, codes) for the variants' metrics."""
    import torch

    from models.autoencoder import PREPROCESS_SCALE, preprocess
    from models.export_seg import export_model

    cfg, gen, B, out, log = job.cfg, job.gen, job.batch, job.out, job.log
    fixed = cfg.fixed_shape
    ae, fwd, inv, motor = explore["ae"], explore["forward"], explore["inverse"], explore["motor"]
    c = ae.cfg
    log(f"rendering {cfg.eval_frames} feature frames ({motor['arm']}, {c.size}x{c.size})")
    imgs, motors = frames.features(motor["arm"], c.size, cfg.eval_frames, cfg.seed + 1)
    x_real = preprocess(imgs, c.color, c.size)
    with torch.no_grad():
        codes_real = ae.encoder(x_real)
    pre = {"input": "RGB uint8 (H, W, 3)", "size": c.size, "resize": "cv2.INTER_AREA", "color": c.color,
           "gray_conversion": "cv2.COLOR_RGB2GRAY" if c.color == "gray" else None, "scale": PREPROCESS_SCALE,
           "mean": 0.0, "std": 1.0, "layout": "NCHW", "range": [0.0, 1.0]}
    common = {"motor": motor, "training": explore["training"]}
    batch = job.dyn({"image": {0: "batch"}, "code": {0: "batch"}, "motor": {0: "batch"}})
    log("exporting encoder, forward, inverse")
    job.entries["encoder"] = export_model(
        ae.encoder, [torch.rand(B, c.in_channels, c.size, c.size, generator=gen)], out / "encoder.onnx",
        ["image"], ["code"], batch, checks=[] if fixed else [(x_real,)],
        contract={"preprocess": pre, "config": c.to_dict(), **common})
    D = fwd.cfg.in_dim
    job.entries["forward"] = export_model(
        fwd, [torch.rand(B, D, generator=gen)], out / "forward.onnx", ["motor"], ["code"], batch,
        checks=[] if fixed else [(torch.from_numpy(motors),)],
        contract={"preprocess": {"motor": "normalised [0, 1] per axis"}, "config": fwd.cfg.to_dict(), **common})
    job.entries["inverse"] = export_model(
        inv, [torch.randn(B, c.code_size, generator=gen)], out / "inverse.onnx", ["code"], ["motor"], batch,
        checks=[] if fixed else [(codes_real,)],
        contract={"preprocess": {"code": "encoder output"}, "config": inv.cfg.to_dict(), **common})
    job.extra["motor"] = motor
    job.extra["training"] = explore["training"]
    if explore["goals"] is not None:
        job.extra["goals"] = explore["goals"].tolist()
    return x_real.numpy(), motors, codes_real.numpy()


def _export_segmentation(job: _Job, net: Any, seg_path: Path | None, seg_extra: dict[str, Any],
                         seg_data: tuple[np.ndarray, np.ndarray], real_q: Any) -> Any:
    """guide.onnx and segment.onnx, checked on the rendered frames ``real_q`` (a support mask of their most common
    species) and on random inputs of another size; returns the network's probabilities on ``real_q`` (the CRF's
    check input)."""
    from dataclasses import asdict

    import torch

    from models.export_seg import GuideExport, SegmentExport, as_tensor, export_model
    from models.guided_net import IMAGENET_MEAN, IMAGENET_STD
    from models.onnx_export import sha256_file

    S, B, gen, out, fixed = job.size, job.batch, job.gen, job.out, job.cfg.fixed_shape
    imgs, species = seg_data
    sid = int(np.bincount(species[:B].ravel(), minlength=2)[1:].argmax() + 1)
    real_m = as_tensor((species[:B, None] == sid).astype(np.float32))
    pre = {"input": "RGB uint8 (H, W, 3)", "size": S, "resize": "cv2.INTER_AREA when shrinking, else "
           "cv2.INTER_LINEAR, to size x size", "scale": 1 / 255, "layout": "NCHW", "range": [0.0, 1.0],
           "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "where": "inside the model"},
           "mask": "float32 [K,1,H,W] in [0, 1], resized with cv2.INTER_AREA (1 = the thing to segment)"}
    training = {"weights": str(seg_path), "weights_sha256": sha256_file(seg_path), "extra": seg_extra,
                "config_hash": config_hash(seg_extra)}
    contract = {"preprocess": pre, "config": asdict(net.config), "training": training}
    gexp, sexp = GuideExport(net).eval(), SegmentExport(net).eval()
    hw = {2: "height", 3: "width"}
    job.log("exporting guide, segment")
    job.entries["guide"] = export_model(
        gexp, [torch.rand(B, 3, S, S, generator=gen), (torch.rand(B, 1, S, S, generator=gen) > 0.5).float()],
        out / "guide.onnx", ["images", "masks"], ["guide"],
        job.dyn({"images": {0: "shots", **hw}, "masks": {0: "shots", **hw}}),
        checks=[(real_q, real_m)] + ([] if fixed else [(torch.rand(3, 3, S // 2, S + 16, generator=gen),
                                                      torch.rand(3, 1, S // 2, S + 16, generator=gen))]),
        contract=contract)
    with torch.no_grad():
        g_real = net.guide(real_q, real_m)
        probs_real = torch.softmax(net.segment(real_q, g_real), 1)
    job.entries["segment"] = export_model(
        sexp, [torch.rand(B, 3, S, S, generator=gen), torch.randn(1, net.guide_dim, generator=gen)],
        out / "segment.onnx", ["query", "guide"], ["logits"],
        job.dyn({"query": {0: "batch", **hw}, "logits": {0: "batch", **hw}}),
        checks=[(real_q, g_real)] + ([] if fixed else [(torch.rand(3, 3, S // 2, S + 16, generator=gen),
                                                      g_real)]),
        contract={**contract, "output": "logits [N,2,H,W] at the input size, channel 1 = foreground; "
                  "softmax over channels for probabilities"})
    job.extra["segmenter"] = {"imgsz": S, **training}
    return probs_real


def _export_crf(job: _Job, real_q: Any, probs_real: Any) -> None:
    """crf.onnx (``models.crf.MeanFieldCRF`` with the ``--crf-*`` parameters), checked on the rendered frames with the
    network's probabilities (random ones without a segmenter)."""
    import torch

    from models.crf import MeanFieldCRF
    from models.export_seg import export_model

    S, B, gen = job.size, job.batch, job.gen
    params = job.cfg.crf_params()
    crf = MeanFieldCRF(**params.as_dict()).eval()
    hw = {0: "batch", 2: "height", 3: "width"}
    if probs_real is None:
        probs_real = torch.softmax(torch.randn(B, 2, S, S, generator=gen) * 2, 1)
    job.log("exporting crf")
    job.entries["crf"] = export_model(
        crf, [torch.softmax(torch.randn(B, 2, S, S, generator=gen) * 2, 1), torch.rand(B, 3, S, S, generator=gen)
              * 255], job.out / "crf.onnx", ["probs", "image"], ["refined"],
        job.dyn({"probs": hw, "image": hw, "refined": hw}),
        checks=[(probs_real, real_q * 255)],
        contract={"preprocess": {"probs": "softmax probabilities [N,2,H,W] (sum 1 over channels)",
                                 "image": "RGB float32 [N,3,H,W] in 0..255, the frame the probs belong to"},
                  "config": params.as_dict(), "training": None})
    job.extra["crf"] = params.as_dict()


def _write_manifest(job: _Job) -> None:
    from models.onnx_export import write_manifest

    try:
        write_manifest(job.out, job.entries, **job.extra)
    except OSError as e:
        raise UsageError(f"cannot write manifest.json in {str(job.out)!r}: {e}") from None
