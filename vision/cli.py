"""`microfarm segment`: few-shot segmentation of a camera feed, video, image, folder, glob, URL or `sim`.

Writes into ``runs/segment/<N>/`` (or ``--out``): ``masks/<stem>.png`` per frame (single-channel uint8, the input
frame's size: 0 or 255 for a one-class support, the label values 0..K for a multi-class one (``--classes``,
``models.labels``); video-like sources use ``frame_<index>``), overlays with ``--save-overlay``
(``overlays/<stem>.png``, or ``overlay.mp4`` for video-like sources; one colour per class) and ``summary.json``
(frames, seconds, frames per second, the class names, per-frame foreground fraction and, for several classes,
each class's area fraction).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import cv2
import numpy as np
from tqdm import tqdm

from microfarm_toolkit import (
    UsageError,
    atomic_path,
    atomic_write_json,
    atomic_write_png,
    given_fields,
    next_run_dir,
    parse_config,
)
from models.flags import ClassFlags, ColourPriorFlags, CRFFlags, CRFGateFlags, ScaleFlags, crf_flag
from models.labels import SupportLabels, class_fractions
from models.support_io import load_support_files
from vision.adapt_flags import AdaptFlags
from vision.overlay import overlay
from vision.sources import Source, open_source, read_image

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "segmenter.safetensors"


@dataclasses.dataclass
class SegmentConfig(ColourPriorFlags, CRFFlags, CRFGateFlags, ScaleFlags, ClassFlags, AdaptFlags):
    """Few-shot segmentation of a camera feed: show 1-5 annotated examples, segment every frame."""

    support: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "IMG:MASK, an example image and its mask (non-zero = the thing to segment; or label values 1..K / "
                "colours of --classes for several classes at once)"})
    source: str | None = dataclasses.field(default=None, metadata={
        "help": "webcam index, video, image, folder, glob, rtsp/http URL, or 'sim' (required)"})
    out: Path | None = dataclasses.field(default=None, metadata={"help": "output folder (default runs/segment/<N>)"})
    crf: Literal["none", "dense", "meanfield"] = dataclasses.field(default="meanfield", metadata={
        "help": "refinement: meanfield (exportable torch CRF), dense (pydensecrf) or none; behind the CRF gate "
                "(--crf-gate)"})
    weights: Path | None = dataclasses.field(default=None, metadata={
        "help": f"segmenter weights (default: the shipped {DEFAULT_WEIGHTS.name})"})
    imgsz: int = dataclasses.field(default=256, metadata={"help": "network input side in pixels"})
    vid_stride: int = dataclasses.field(default=1, metadata={"help": "use every N-th frame of a video or feed"})
    show: bool = dataclasses.field(default=False, metadata={"help": "show the overlay in a window (q quits)"})
    save_overlay: bool = dataclasses.field(default=False, metadata={"help": "write overlays (PNG or MP4)"})
    device: Literal["cpu", "cuda"] = dataclasses.field(default="cpu", metadata={"help": "torch device"})
    backend: Literal["torch", "onnx"] = dataclasses.field(default="torch", metadata={
        "help": "torch (the weights) or onnx (an exported --bundle, run by ONNX Runtime)"})
    bundle: Path | None = dataclasses.field(default=None, metadata={
        "help": "ONNX bundle folder from `microfarm export` (with --backend onnx)"})
    resize_masks: bool = dataclasses.field(default=False, metadata={
        "help": "resize a support mask whose size differs from its image instead of refusing it"})
    max_frames: int = dataclasses.field(default=0, metadata={"help": "stop after N frames (0: at the source's end)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "the bed layout of the 'sim' source"})


def load_support(specs: list[str], resize_masks: bool, classes: list[str] | None = None
                 ) -> tuple[list[np.ndarray], SupportLabels]:
    """Parse ``IMG:MASK`` pairs (and the ``--classes`` legend) -> RGB images (H,W,3) uint8 and the masks as labels
    (``models.support_io.load_support_files``); UsageError on bad input."""
    from models.labels import parse_classes

    if not specs:
        raise UsageError("give at least one --support IMG:MASK (an example image and its mask)")
    if len(specs) > 5:
        warnings.warn(f"{len(specs)} support shots given; the model was trained with 1 to 5", stacklevel=2)
    legend = parse_classes(classes, UsageError) if classes else None
    return load_support_files(specs, read_image, legend, resize_masks, UsageError)


def _check_bundle_crf(bundle: Path, wanted: dict[str, Any]) -> None:
    """The CRF parameters are baked into crf.onnx at export: refuse --crf-* flags that differ from them."""
    try:
        baked = json.loads((bundle / "manifest.json").read_text())["models"]["crf"]["config"]
    except (OSError, ValueError, KeyError, TypeError):
        return  # an old or partial manifest: the runtime has checked what it needs
    baked = {"bilateral": "window", **baked}  # bundles from before the grid mode used the window
    diff = [k for k, v in wanted.items() if k in baked and baked[k] != v]
    if diff:
        k = diff[0]
        flag = crf_flag(k)
        raise UsageError(f"the bundle's crf.onnx was exported with {k}={baked[k]!r}, not {wanted[k]!r} ({flag}); "
                         f"re-export it with `microfarm export {flag} {wanted[k]}` or drop the flag")


def make_predictor(cfg: SegmentConfig, given: set[str] | None = None) -> Any:
    """The ``FewShotSegmenter`` (torch) or ``OnnxSegmenter`` (``--backend onnx``) for ``cfg``; UsageError if the
    weights or the bundle are missing or wrong. ``given``: the config fields set on the command line (None: all);
    with ``--backend onnx`` only those ``--crf-*`` values are checked against the bundle's, and a bundle without
    ``crf.onnx`` runs without the CRF (a warning) unless ``--crf meanfield`` was asked for."""
    if cfg.backend == "onnx":
        from models.onnx_segmenter import OnnxSegmenter
        from models.runtime import BundleError, Runtime

        if cfg.bundle is None:
            raise UsageError("--backend onnx needs --bundle DIR (a folder written by `microfarm export`)")
        if cfg.crf == "dense":
            raise UsageError("--crf dense is not in an ONNX bundle; use --crf meanfield (crf.onnx) or none")
        try:
            rt = Runtime(cfg.bundle, providers=["cuda"] if cfg.device == "cuda" else None)
            if cfg.crf == "meanfield" and not rt.has("crf") and given is not None and "crf" not in given:
                warnings.warn("the bundle has no crf.onnx (exported with --no-crf): segmenting without the CRF",
                              stacklevel=2)
                cfg.crf = "none"
            seg = OnnxSegmenter(rt, crf=cfg.crf, imgsz=cfg.imgsz, colour_prior=cfg.check_colour_prior(),
                                crf_gate=cfg.crf_gate, scales=cfg.scale_list(), fusion=cfg.fusion)
        except BundleError as e:
            raise UsageError(str(e)) from None
        if cfg.crf == "meanfield":
            wanted = {k: v for k, v in cfg.crf_params().as_dict().items()
                      if given is None or crf_flag(k)[2:].replace("-", "_") in given}
            _check_bundle_crf(Path(cfg.bundle), wanted)
        return seg
    if cfg.bundle is not None:
        raise UsageError("--bundle is used with --backend onnx only; add --backend onnx")
    from models.weights import WeightsError
    from vision.predictor import FewShotSegmenter

    weights = cfg.weights or DEFAULT_WEIGHTS
    if not Path(weights).is_file():
        raise UsageError(f"no segmenter weights at {str(weights)!r}; pass --weights or train them with "
                         "`microfarm train-segmenter` (see README)")
    try:
        return FewShotSegmenter(weights, crf=cfg.crf, imgsz=cfg.imgsz, device=cfg.device, crf_params=cfg.crf_params(),
                                colour_prior=cfg.check_colour_prior(), crf_gate=cfg.crf_gate,
                                scales=cfg.scale_list(), fusion=cfg.fusion)
    except WeightsError as e:
        raise UsageError(f"cannot load {str(weights)!r}: {e}") from None


def segment(cfg: SegmentConfig, given: set[str] | None = None) -> Path:
    """Run the segmentation described by ``cfg``; returns the output folder. ``given``: see ``make_predictor``."""
    if cfg.source is None:
        raise UsageError("--source is required: a webcam index, video, image, folder, glob, URL or 'sim'")
    if cfg.max_frames < 0:
        raise UsageError(f"--max-frames must be >= 0, got {cfg.max_frames}")
    cfg.check_scales(cfg.imgsz)
    cfg.check_adapt()
    if cfg.adapting and cfg.backend != "torch":
        raise UsageError("--adapt fine-tunes the torch weights: use --backend torch, save them with --save-adapted "
                         "PATH and bundle them with `microfarm export --segmenter PATH`")
    images, labels = load_support(cfg.support, cfg.resize_masks, cfg.classes)
    predictor = make_predictor(cfg, given)
    adapted = _adapt(cfg, predictor, images, labels) if cfg.adapting else None
    predictor.set_support(images, labels.masks, labels.names)
    if cfg.crf != "none" and not predictor.crf_supported:
        warnings.warn(f"the CRF is off: the bundle's crf.onnx takes {predictor.backend.crf_max_labels} labels, this "
                      f"support has {len(labels.names) + 1} (background and {len(labels.names)} classes); use "
                      "--backend torch for a multi-class CRF", stacklevel=2)
    elif cfg.crf != "none" and cfg.crf_gate:  # the gate's check on the support, once, before the first frame
        on, gate = predictor.crf_on, predictor.gate.report()
        print(f"CRF check on the support: mean IoU {gate['support_iou_without_crf']:.3f} without the CRF, "
              f"{gate['support_iou_with_crf']:.3f} with it -> CRF {'on' if on else 'off'} "
              f"({'it does not hurt' if on else 'it would erase part of the examples'}; --no-crf-gate always runs it)")
    source = open_source(cfg.source, cfg.vid_stride, sim_size=cfg.imgsz, seed=cfg.seed)
    out = next_run_dir("segment", cfg.out)
    (out / "masks").mkdir(exist_ok=True)
    try:
        frames = _loop(cfg, predictor, source, out, adapted)
    finally:
        source.close()
    return frames


def _adapt(cfg: SegmentConfig, predictor: Any, images: list[np.ndarray], labels: SupportLabels) -> dict[str, Any]:
    """Fine-tune the predictor's network on the support (``vision.adapt``), swap it in, save it if asked."""
    from models.guided_net import save_guided_net
    from vision.adapt import adapt, support_classes

    net, report = adapt(predictor.model, support_classes(images, labels.masks, len(labels.names)),
                        seconds=cfg.adapt, steps=cfg.adapt_steps, part=cfg.adapt_part, seed=cfg.seed)
    predictor.set_model(net)
    print(f"adapted the {report['part']} to the support in {report['steps']} steps, {report['seconds']:.1f} s "
          f"(loss {report['loss_first']:.3f} -> {report['loss_last']:.3f})")
    if cfg.save_adapted is not None:
        save_guided_net(net, cfg.save_adapted, extra={"adapted_from": str(cfg.weights or DEFAULT_WEIGHTS),
                                                      "adapt": report, "support": cfg.support})
        report["saved"] = str(cfg.save_adapted)
    return report


def _loop(cfg: SegmentConfig, predictor: Any, source: Source, out: Path, adapted: dict[str, Any] | None) -> Path:
    total = source.length if cfg.max_frames == 0 else min(cfg.max_frames, source.length or cfg.max_frames)
    bar = tqdm(total=total, desc="segment", unit="frame", disable=total is None)
    writer = None
    files = contextlib.ExitStack()  # holds the overlay video's atomic temp path until the loop ends
    fractions: dict[str, float] = {}
    per_class: dict[str, dict[str, float]] | None = {} if predictor.multiclass else None
    seconds, stopped, wall0 = 0.0, "end of source", time.perf_counter()
    window = "microfarm segment (q quits)"
    try:
        for name, frame in source:
            t0 = time.perf_counter()
            _, mask = predictor.predict(frame)
            seconds += time.perf_counter() - t0
            atomic_write_png(out / "masks" / f"{name}.png", mask)
            fractions[name] = round(float((mask > 0).mean()), 5)
            if per_class is not None:
                per_class[name] = class_fractions(mask, predictor.classes)
            if cfg.save_overlay or cfg.show:
                ov = overlay(frame, mask, labels=per_class is not None)
                if cfg.save_overlay and source.is_video:
                    if writer is None:
                        video_tmp = files.enter_context(atomic_path(out / "overlay.mp4"))
                        writer = cv2.VideoWriter(str(video_tmp), cv2.VideoWriter_fourcc(*"mp4v"),
                                                 source.fps / max(cfg.vid_stride, 1), ov.shape[1::-1])
                    writer.write(cv2.cvtColor(ov, cv2.COLOR_RGB2BGR))
                elif cfg.save_overlay:
                    atomic_write_png(out / "overlays" / f"{name}.png", ov)
                if cfg.show and _show(window, ov):
                    stopped = "q pressed"
                    break
            bar.update()
            if cfg.max_frames and len(fractions) >= cfg.max_frames:
                stopped = "--max-frames reached"
                break
    except KeyboardInterrupt:
        stopped = "interrupted (Ctrl-C)"
    except UsageError as e:  # e.g. a live stream that dropped for good: the frames so far and a summary stay
        stopped = f"error: {e}"
        raise
    finally:
        bar.close()
        if writer is not None:
            writer.release()
        files.close()
        gate = predictor.gate.report() if cfg.crf != "none" else None
        if gate is not None and not predictor.crf_supported:
            gate.update(crf_on=False, reason=f"the CRF takes {predictor.backend.crf_max_labels} labels, the support "
                        f"has {len(predictor.classes) + 1}")
        _write_summary(cfg, out, fractions, seconds, time.perf_counter() - wall0, stopped, gate, predictor.sides,
                       list(predictor.classes), per_class, adapted, predictor.fusion_report())
    return out


def _show(window: str, rgb: np.ndarray) -> bool:
    """Show a frame; True when the user pressed q. UsageError where OpenCV has no GUI (headless build)."""
    try:
        cv2.imshow(window, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        return (cv2.waitKey(1) & 0xFF) == ord("q")
    except cv2.error:
        raise UsageError("--show needs a display and an OpenCV build with GUI support "
                         "(pip install opencv-python); use --save-overlay instead") from None


def _write_summary(cfg: SegmentConfig, out: Path, fractions: dict[str, float], predict_seconds: float,
                   seconds: float, stopped: str, gate: dict[str, Any] | None, sides: tuple[int, ...],
                   classes: list[str], per_class: dict[str, dict[str, float]] | None,
                   adapted: dict[str, Any] | None = None, fusion: dict[str, Any] | None = None) -> None:
    """seconds/fps: wall time of the whole loop (read, predict, write); predict_*: the predictor alone; gate: the
    CRF gate's check (``models.crf_gate.CRFGate.report``; None without a CRF); sides: the network's input sides;
    classes: the support's class names; per_class: per frame, each class's area fraction (None: one class);
    adapted: the adaptation's report (``vision.adapt.adapt``; None without --adapt); fusion: how network and
    colour were combined (``models.pipeline.SegmentationPipeline.fusion_report``)."""
    n = len(fractions)
    summary = {"source": cfg.source, "support": cfg.support, "crf": cfg.crf, "crf_gate": gate, "imgsz": cfg.imgsz,
               "scales": cfg.scale_list(), "input_sides": list(sides),
               "frames": n, "seconds": round(seconds, 4), "fps": round(n / seconds, 2) if seconds > 0 else None,
               "predict_seconds": round(predict_seconds, 4),
               "predict_fps": round(n / predict_seconds, 2) if predict_seconds > 0 else None,
               "stopped": stopped, "classes": classes, "adapted": adapted, "fusion": fusion,
               "foreground_fraction": fractions}
    if per_class is not None:
        summary["class_fraction"] = per_class
    atomic_write_json(out / "summary.json", summary)


def cli(argv: list[str]) -> int:
    cfg = parse_config(SegmentConfig, argv, prog="microfarm segment")
    cfg.crf_params()  # bad --crf-* values exit 2 before anything is read or written
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.formatwarning = lambda msg, *a, **k: f"microfarm segment: warning: {msg}\n"  # type: ignore[assignment]
        out = segment(cfg, given_fields(argv))
    summary = json.loads((out / "summary.json").read_text())
    print(f"segmented {summary['frames']} frames at {summary['fps']} fps ({summary['stopped']}) -> {out}")
    return 0
