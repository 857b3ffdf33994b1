"""The fp16 / int8 variants of `microfarm export` (``models.bundle_export``), judged by task metric: segmentation
mIoU may drop by at most ``MIOU_TOL`` point, reach and forward error may grow by at most ``REL_TOL``; a variant outside
that is left out (recorded in the manifest) and the runtime then uses fp32 for that model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from models.export_checks import FrameSource, calib_feeds, crf_agreement, reach_errors, seg_miou, session

__all__ = ["quantized_variants", "MIOU_TOL", "REL_TOL"]

MIOU_TOL, REL_TOL = 0.5, 0.05


def quantized_variants(cfg: Any, out: Path, entries: dict[str, dict[str, Any]], feat: Any, seg_data: Any,
                       frames: FrameSource, log: Any) -> dict[str, Any]:
    """Write the fp16 / int8 variants ``cfg`` asks for (``--fp16``, ``--int8``, calibrated on ``--calib`` frames of
    ``frames``) of the exported ``entries`` in ``out``, measure their task metrics on ``feat`` / ``seg_data`` and keep
    those within tolerance (recorded in the entries); returns the report for the manifest."""
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
            calib_seg = frames.segmentation(cfg.imgsz, cfg.calib, cfg.seed + 3)
        if "encoder" in entries:
            calib_feat = frames.features(entries["encoder"]["motor"]["arm"], entries["encoder"]["preprocess"]["size"],
                                         cfg.calib, cfg.seed + 4)
    fp32 = {n: session(out / e["file"]) for n, e in entries.items()}

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
                files[name] = to_int8(src, dst, calib_feeds(name, entries, calib_feat, calib_seg, fp32))
            if name in files:
                meta = {p.key: p.value for p in onnx.load(str(src)).metadata_props}
                c = json.loads(meta[CONTRACT_KEY])
                c["precision"] = kind
                meta[CONTRACT_KEY] = json.dumps(c, sort_keys=True)
                stamp_metadata(files[name], meta)
        sess = {**fp32, **{n: session(p) for n, p in files.items()}}
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
            ok["crf"] = crf_agreement(fp32["crf"], sess["crf"], seg_data) >= 0.995
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
            rep["crf_mask_agreement"] = crf_agreement(fp32["crf"], sess["crf"], seg_data)
        report[kind] = rep
        log(f"{kind}: {got} (fp32 {base}); kept {rep['kept']}, rejected {rep['rejected']}")
    return report
