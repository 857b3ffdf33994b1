"""`microfarm export`: every model (and the mean-field CRF) to one ONNX bundle, checked against torch.

Bundle (``--out``, default ``runs/export/<N>/``):

- ``encoder.onnx``, ``forward.onnx``, ``inverse.onnx`` from an exploration run (``--explore-run DIR``: its
  ``weights/``, the SOM goals from ``checkpoint/``, the motor contract from ``export/manifest.json``);
- ``guide.onnx``, ``segment.onnx`` from the segmenter weights (``--segmenter``, default the shipped file);
- ``crf.onnx``: ``models.crf.MeanFieldCRF`` with the ``--crf-*`` parameters (default ``CRFParams()``);
- ``manifest.json``: per model file, sha256, inputs/outputs (named dynamic axes), dtypes, preprocessing,
  versions, config and training config; the same contract in each model's ``metadata_props``.

Each model passes ``onnx.checker`` (full check) and ONNX Runtime matches torch (atol 1e-4, rtol 1e-3) on
random inputs, a second size, and real frames rendered by the simulator. ``--fp16`` / ``--int8 --calib N`` add
``<name>.fp16.onnx`` / ``<name>.int8.onnx`` judged by task metric (segmentation mIoU may drop by at most
0.5 point, reach and forward error may grow by at most 5%); a variant outside that is left out (recorded in
the manifest) and the runtime then uses fp32 for that model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from microfarm import UsageError, next_run_dir, parse_config
from models.crf_params import CRFFlags
from models.export_checks import (
    _calib_feeds,
    _crf_agreement,
    _session,
    _to_nchw,
    reach_errors,
    render_features,
    render_segmentation,
    seg_miou,
    write_demo_sources,
)

__all__ = ["ExportConfig", "export_bundle", "write_demo_sources", "cli", "DEFAULT_SEGMENTER"]

DEFAULT_SEGMENTER = Path(__file__).resolve().parent / "weights" / "segmenter.safetensors"
MIOU_TOL, REL_TOL = 0.5, 0.05


def _f(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class ExportConfig(CRFFlags):
    """Export every model (and the CRF) to an ONNX bundle, checked against torch."""

    out: Path | None = _f(None, "bundle folder (default runs/export/<N>)")
    explore_run: Path | None = _f(None, "exploration run folder: encoder/forward/inverse + SOM goals")
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


# -- sources ---------------------------------------------------------------------------------------------
def _config_hash(cfg: Any) -> str:
    return hashlib.sha256(json.dumps(cfg, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _load_explore(run: Path) -> dict[str, Any]:
    """Autoencoder, forward, inverse, goals, motor contract and training config of an exploration run."""
    from safetensors.numpy import load_file

    from models.autoencoder import AutoencoderConfig, ConvAutoencoder
    from models.mlp import MLP, MLPConfig
    from models.weights import WeightsError, load_into, read_metadata

    run = Path(run)
    wdir = run / "weights"
    names = {"autoencoder": "autoencoder", "forward": "forward_mlp", "inverse": "inverse_mlp"}
    if not run.is_dir():
        raise UsageError(f"--explore-run {str(run)!r} is not a folder; pass a finished `microfarm explore` run")
    missing = [n for n in names if not (wdir / f"{n}.safetensors").is_file()]
    if missing:
        raise UsageError(f"--explore-run {str(run)!r} has no weights/{missing[0]}.safetensors (the run has not "
                         "finished?); finish it or resume it with `microfarm explore --resume DIR`")
    try:
        ae = ConvAutoencoder(AutoencoderConfig.from_dict(read_metadata(wdir / "autoencoder.safetensors")["config"]))
        load_into(ae, wdir / "autoencoder.safetensors", kind="autoencoder")
        mlps = {}
        for n in ("forward", "inverse"):
            m = MLP(MLPConfig.from_dict(read_metadata(wdir / f"{n}.safetensors")["config"]))
            load_into(m, wdir / f"{n}.safetensors", kind=names[n])
            mlps[n] = m.eval()
    except (WeightsError, KeyError, ValueError) as e:
        raise UsageError(f"--explore-run {str(run)!r}: unusable weights ({e})") from None
    summary = json.loads((run / "summary.json").read_text()) if (run / "summary.json").is_file() else {}
    train_cfg = summary.get("config", {})
    goals = None
    ck = run / "checkpoint" / "state.safetensors"
    if ck.is_file():
        goals = load_file(str(ck)).get("state/goals")
    motor: dict[str, Any] = {}
    if (run / "export" / "manifest.json").is_file():
        motor = json.loads((run / "export" / "manifest.json").read_text()).get("motor", {})
    dim = mlps["forward"].cfg.in_dim
    motor = {"robot": train_cfg.get("robot", "sim"), "arm": train_cfg.get("arm", "gantry"),
             "low": [0.0] * dim, "high": [1.0] * dim, "dim": dim, **motor}
    return {"ae": ae.eval(), "forward": mlps["forward"], "inverse": mlps["inverse"],
            "goals": None if goals is None else np.asarray(goals, np.float32), "motor": motor,
            "training": {"config": train_cfg, "config_hash": _config_hash(train_cfg), "run": str(run),
                         "iterations": summary.get("iterations")}}


# -- export ----------------------------------------------------------------------------------------------
def export_bundle(cfg: ExportConfig, log: Any = print) -> Path:
    """Write the bundle described by ``cfg``; returns its folder."""
    import torch

    from models.export_seg import GuideExport, SegmentExport, as_tensor, export_model, versions
    from models.onnx_export import write_manifest

    seg_path = None if not cfg.segmentation else Path(cfg.segmenter or DEFAULT_SEGMENTER)
    if seg_path is not None and not seg_path.is_file():
        raise UsageError(f"no segmenter weights at {str(seg_path)!r}; pass --segmenter FILE, train them with "
                         "`microfarm train-segmenter`, or pass --no-segmentation")
    if cfg.explore_run is None and seg_path is None and not cfg.crf:
        raise UsageError("nothing to export: give --explore-run and/or a segmenter, or drop --no-crf")
    if cfg.imgsz < 32 or cfg.imgsz % 16:
        raise UsageError(f"--imgsz must be a multiple of 16 and >= 32, got {cfg.imgsz}")
    if cfg.int8 and cfg.calib < 1:
        raise UsageError(f"--calib must be >= 1 with --int8, got {cfg.calib}")
    if cfg.eval_frames < 2:
        raise UsageError(f"--eval-frames must be >= 2, got {cfg.eval_frames}")
    explore = _load_explore(cfg.explore_run) if cfg.explore_run is not None else None
    net, seg_extra = None, {}
    if seg_path is not None:
        from models.guided_net import load_guided_net
        from models.weights import WeightsError

        try:
            net, seg_extra = load_guided_net(seg_path)
        except WeightsError as e:
            raise UsageError(f"cannot load segmenter {str(seg_path)!r}: {e}") from None
    out = next_run_dir("export", cfg.out)
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    S, fixed = cfg.imgsz, cfg.fixed_shape
    B = 1 if fixed else 2
    entries: dict[str, dict[str, Any]] = {}
    extra: dict[str, Any] = {"versions": versions(), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                             "fixed_shape": fixed}
    t0 = time.perf_counter()

    def dyn(spec: dict[str, dict[int, str]]) -> dict[str, dict[int, str]]:
        return {} if fixed else spec

    # ---- curiosity models
    feat = None
    if explore is not None:
        ae, fwd, inv, motor = explore["ae"], explore["forward"], explore["inverse"], explore["motor"]
        c = ae.cfg
        log(f"rendering {cfg.eval_frames} feature frames ({motor['arm']}, {c.size}x{c.size})")
        imgs, motors = render_features(motor["arm"], c.size, cfg.eval_frames, cfg.seed + 1)
        from models.autoencoder import PREPROCESS_SCALE, preprocess

        x_real = preprocess(imgs, c.color, c.size)
        with torch.no_grad():
            codes_real = ae.encoder(x_real)
        pre = {"input": "RGB uint8 (H, W, 3)", "size": c.size, "resize": "cv2.INTER_AREA", "color": c.color,
               "gray_conversion": "cv2.COLOR_RGB2GRAY" if c.color == "gray" else None, "scale": PREPROCESS_SCALE,
               "mean": 0.0, "std": 1.0, "layout": "NCHW", "range": [0.0, 1.0]}
        common = {"motor": motor, "training": explore["training"]}
        batch = dyn({"image": {0: "batch"}, "code": {0: "batch"}, "motor": {0: "batch"}})
        log("exporting encoder, forward, inverse")
        entries["encoder"] = export_model(
            ae.encoder, [torch.rand(B, c.in_channels, c.size, c.size, generator=gen)], out / "encoder.onnx",
            ["image"], ["code"], batch, checks=[] if fixed else [(x_real,)],
            contract={"preprocess": pre, "config": c.to_dict(), **common})
        D = fwd.cfg.in_dim
        entries["forward"] = export_model(
            fwd, [torch.rand(B, D, generator=gen)], out / "forward.onnx", ["motor"], ["code"], batch,
            checks=[] if fixed else [(torch.from_numpy(motors),)],
            contract={"preprocess": {"motor": "normalised [0, 1] per axis"}, "config": fwd.cfg.to_dict(), **common})
        entries["inverse"] = export_model(
            inv, [torch.randn(B, c.code_size, generator=gen)], out / "inverse.onnx", ["code"], ["motor"], batch,
            checks=[] if fixed else [(codes_real,)],
            contract={"preprocess": {"code": "encoder output"}, "config": inv.cfg.to_dict(), **common})
        extra["motor"] = motor
        extra["training"] = explore["training"]
        if explore["goals"] is not None:
            extra["goals"] = explore["goals"].tolist()
        feat = (x_real.numpy(), motors, codes_real.numpy())

    # ---- segmentation
    seg_data = None
    if net is not None or cfg.crf:
        n_eval = cfg.eval_frames
        log(f"rendering {n_eval} segmentation frames ({S}x{S})")
        seg_imgs, seg_species = render_segmentation(S, n_eval, cfg.seed + 2)
        seg_data = (seg_imgs, seg_species)
    real_q = as_tensor(_to_nchw(seg_data[0][:B])) if seg_data is not None else None
    probs_real = None
    if net is not None:
        from dataclasses import asdict

        from models.guided_net import IMAGENET_MEAN, IMAGENET_STD

        assert seg_data is not None and real_q is not None
        imgs, species = seg_data
        sid = int(np.bincount(species[:B].ravel(), minlength=2)[1:].argmax() + 1)
        real_m = as_tensor((species[:B, None] == sid).astype(np.float32))
        pre = {"input": "RGB uint8 (H, W, 3)", "size": S, "resize": "cv2.INTER_AREA when shrinking, else "
               "cv2.INTER_LINEAR, to size x size", "scale": 1 / 255, "layout": "NCHW", "range": [0.0, 1.0],
               "normalisation": {"mean": IMAGENET_MEAN, "std": IMAGENET_STD, "where": "inside the model"},
               "mask": "float32 [K,1,H,W] in [0, 1], resized with cv2.INTER_AREA (1 = the thing to segment)"}
        training = {"weights": str(seg_path), "weights_sha256": _sha(seg_path), "extra": seg_extra,
                    "config_hash": _config_hash(seg_extra)}
        contract = {"preprocess": pre, "config": asdict(net.config), "training": training}
        gexp, sexp = GuideExport(net).eval(), SegmentExport(net).eval()
        hw = {2: "height", 3: "width"}
        log("exporting guide, segment")
        entries["guide"] = export_model(
            gexp, [torch.rand(B, 3, S, S, generator=gen), (torch.rand(B, 1, S, S, generator=gen) > 0.5).float()],
            out / "guide.onnx", ["images", "masks"], ["guide"],
            dyn({"images": {0: "shots", **hw}, "masks": {0: "shots", **hw}}),
            checks=[(real_q, real_m)] + ([] if fixed else [(torch.rand(3, 3, S // 2, S + 16, generator=gen),
                                                          torch.rand(3, 1, S // 2, S + 16, generator=gen))]),
            contract=contract)
        with torch.no_grad():
            g_real = net.guide(real_q, real_m)
            probs_real = torch.softmax(net.segment(real_q, g_real), 1)
        entries["segment"] = export_model(
            sexp, [torch.rand(B, 3, S, S, generator=gen), torch.randn(1, net.guide_dim, generator=gen)],
            out / "segment.onnx", ["query", "guide"], ["logits"],
            dyn({"query": {0: "batch", **hw}, "logits": {0: "batch", **hw}}),
            checks=[(real_q, g_real)] + ([] if fixed else [(torch.rand(3, 3, S // 2, S + 16, generator=gen),
                                                          g_real)]),
            contract={**contract, "output": "logits [N,2,H,W] at the input size, channel 1 = foreground; "
                      "softmax over channels for probabilities"})
        extra["segmenter"] = {"imgsz": S, **training}

    if cfg.crf:
        from models.crf import MeanFieldCRF
        params = cfg.crf_params()
        crf = MeanFieldCRF(**params.as_dict()).eval()
        hw = {0: "batch", 2: "height", 3: "width"}
        assert real_q is not None
        if probs_real is None:
            probs_real = torch.softmax(torch.randn(B, 2, S, S, generator=gen) * 2, 1)
        log("exporting crf")
        entries["crf"] = export_model(
            crf, [torch.softmax(torch.randn(B, 2, S, S, generator=gen) * 2, 1), torch.rand(B, 3, S, S, generator=gen)
                  * 255], out / "crf.onnx", ["probs", "image"], ["refined"],
            dyn({"probs": hw, "image": hw, "refined": hw}),
            checks=[(probs_real, real_q * 255)],
            contract={"preprocess": {"probs": "softmax probabilities [N,2,H,W] (sum 1 over channels)",
                                     "image": "RGB float32 [N,3,H,W] in 0..255, the frame the probs belong to"},
                      "config": params.as_dict(), "training": None})
        extra["crf"] = params.as_dict()

    # ---- variants judged by task metric
    if cfg.fp16 or cfg.int8:
        extra["quantization"] = _variants(cfg, out, entries, feat, seg_data, log)
    try:
        write_manifest(out, entries, **extra)
    except OSError as e:
        raise UsageError(f"cannot write manifest.json in {str(out)!r}: {e}") from None
    log(f"exported {', '.join(entries)} in {time.perf_counter() - t0:.1f} s -> {out}")
    return out


def _sha(path: Path) -> str:
    from models.onnx_export import sha256_file

    return sha256_file(path)


def _variants(cfg: ExportConfig, out: Path, entries: dict[str, dict[str, Any]], feat: Any, seg_data: Any,
              log: Any) -> dict[str, Any]:
    """Write fp16 / int8 variants, measure the task metrics, keep those within tolerance."""
    import onnx

    from models.export_seg import stamp_metadata
    from models.onnx_export import sha256_file
    from models.quantize import to_fp16, to_int8
    from models.runtime import CONTRACT_KEY

    kinds = [k for k, on in (("fp16", cfg.fp16), ("int8", cfg.int8)) if on]
    report: dict[str, Any] = {"tolerance": {"miou_drop_points": MIOU_TOL, "error_growth_relative": REL_TOL}}
    calib_seg = calib_feat = None
    if "int8" in kinds:
        log(f"rendering {cfg.calib} calibration frames")
        if {"guide", "segment"} & set(entries):
            calib_seg = render_segmentation(cfg.imgsz, cfg.calib, cfg.seed + 3)
        if "encoder" in entries:
            calib_feat = render_features(entries["encoder"]["motor"]["arm"], entries["encoder"]["preprocess"]["size"],
                                         cfg.calib, cfg.seed + 4)
    fp32 = {n: _session(out / e["file"]) for n, e in entries.items()}

    def metrics(s: dict[str, Any]) -> dict[str, float]:
        m: dict[str, float] = {}
        if feat is not None:
            m.update(reach_errors(s["encoder"], s["forward"], s["inverse"], *feat))
        if seg_data is not None and "guide" in s:
            m["miou"] = seg_miou(s["guide"], s["segment"], *seg_data)
        return m

    base = metrics(fp32)
    report["fp32"] = base
    for kind in kinds:
        files: dict[str, Path] = {}
        for name, e in entries.items():
            src, dst = out / e["file"], out / e["file"].replace(".onnx", f".{kind}.onnx")
            if kind == "fp16":
                files[name] = to_fp16(src, dst)
            elif name != "crf":  # the CRF has no weights to quantise
                files[name] = to_int8(src, dst, _calib_feeds(name, entries, calib_feat, calib_seg, fp32))
            if name in files:
                meta = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
                c = json.loads(meta[CONTRACT_KEY])
                c["precision"] = kind
                meta[CONTRACT_KEY] = json.dumps(c, sort_keys=True)
                stamp_metadata(files[name], meta)
        sess = {**fp32, **{n: _session(p) for n, p in files.items()}}
        got = metrics(sess)
        ok = {}
        if "miou" in got:
            ok_seg = not (base["miou"] - got["miou"] > MIOU_TOL)
            ok.update(guide=ok_seg, segment=ok_seg)
        if "reach_error" in got:
            ok_r = got["reach_error"] <= base["reach_error"] * (1 + REL_TOL) + 1e-6
            ok.update(encoder=ok_r, inverse=ok_r,
                      forward=got["forward_error"] <= base["forward_error"] * (1 + REL_TOL) + 1e-6)
        if "crf" in files:
            ok["crf"] = _crf_agreement(fp32["crf"], sess["crf"], seg_data) >= 0.995
        rep = {"metrics": got, "kept": [], "rejected": []}
        for name, path in files.items():
            if ok.get(name, True):
                entries[name].setdefault("variants", {})[kind] = {
                    "file": path.name, "sha256": sha256_file(path), "size_bytes": path.stat().st_size}
                rep["kept"].append(name)
            else:
                path.unlink()
                rep["rejected"].append(name)
        if "crf" in files:
            rep["crf_mask_agreement"] = _crf_agreement(fp32["crf"], sess["crf"], seg_data)
        report[kind] = rep
        log(f"{kind}: {got} (fp32 {base}); kept {rep['kept']}, rejected {rep['rejected']}")
    return report


def cli(argv: list[str]) -> int:
    cfg = parse_config(ExportConfig, argv, prog="microfarm export")
    cfg.crf_params()  # bad --crf-* values exit 2 before anything is exported
    from models.onnx_export import OnnxExportError

    try:
        export_bundle(cfg)
    except OnnxExportError as e:
        raise UsageError(f"export check failed: {e}") from None
    return 0
