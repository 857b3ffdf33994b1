"""`microfarm deploy`: the program that runs on the robot: an ONNX bundle through ONNX Runtime, no PyTorch.

Through the ``Robot`` interface (``robot.registry.make_robot``) it loops ``--steps`` times (0: until Ctrl-C):

- reach (``--task reach|both``): the next goal in turn (the bundle's SOM goals, or the codes of ``--goal IMG``
  images) -> ``inverse`` -> motor command (clipped by the robot to its limits) -> move -> capture -> ``encode``;
  reach error = L2 distance between the goal code and the code of what the camera sees after the move;
- segment (``--task segment|both``): the captured frame -> guide (computed once from ``--support IMG:MASK``,
  one per class of a multi-class support, ``--classes``), ``segment`` and the mean-field ``crf`` -> mask.

Writes ``runs/deploy/<N>/`` (or ``--out``): ``steps.jsonl`` (one line per step: goal, command, reach error,
foreground fraction (and each class's, for several classes), latencies in ms), ``summary.json`` (latency
p50/p95/p99 per stage, frames per second, mean reach error per goal, the class names, how it stopped), and
``masks/step_<k>.png`` with ``--save-masks`` (0/255, or labels 0..K for several classes). Ctrl-C stops
cleanly (the robot is disconnected and the summary written). Imports numpy, OpenCV, onnxruntime and the robot
interface only; ``--robot sim`` also needs pybullet, because the simulator is the robot.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from microfarm_toolkit import UsageError, atomic_write_bytes, atomic_write_json, next_run_dir, parse_config
from models.flags import ClassFlags, ColourPriorFlags, CRFGateFlags, ScaleFlags
from models.labels import ClassSpec, class_fractions

__all__ = ["DeployConfig", "deploy", "cli", "percentiles"]


def _f(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class DeployConfig(ColourPriorFlags, CRFGateFlags, ScaleFlags, ClassFlags):
    """Run an ONNX bundle on a robot (segmentation and/or reaching goals) without PyTorch."""

    bundle: Path | None = _f(None, "bundle folder written by `microfarm export` (required)")
    robot: str = _f("sim", "robot name in robot.registry (sim = the PyBullet simulator)")
    task: Literal["segment", "reach", "both"] = _f("both", "what to run each step")
    support: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "IMG:MASK, an example image and its mask (non-zero = the thing to segment; or label values 1..K / "
                "colours of --classes for several classes at once)"})
    goal: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "goal image to reach (default: the bundle's SOM goals, each in turn)"})
    steps: int = _f(50, "steps to run (0: until Ctrl-C)")
    providers: str = _f("auto", "execution providers, comma separated: auto, tensorrt, cuda, cpu")
    precision: Literal["fp32", "fp16", "int8"] = _f("fp32", "model variant (fp32 where the bundle lacks one)")
    crf: Literal["meanfield", "none"] = _f("meanfield", "refine masks with crf.onnx")
    imgsz: int = _f(0, "segmentation input side (0: the bundle's)")
    size: int = _f(0, "camera image side of the sim robot (0: the segmentation input side)")
    threads: int = _f(0, "ONNX Runtime intra-op threads (0: its default)")
    crf_threads: int = _f(1, "intra-op threads of crf.onnx (0: as --threads; one was fastest on 2 cores)")
    save_masks: bool = _f(False, "write masks/step_<k>.png")
    seed: int = _f(0, "the sim robot's bed layout / reset seed")
    out: Path | None = _f(None, "output folder (default runs/deploy/<N>)")


def percentiles(ms: list[float]) -> dict[str, float | None]:
    if not ms:
        return {"p50": None, "p95": None, "p99": None, "mean": None}
    a = np.asarray(ms)
    return {"p50": round(float(np.percentile(a, 50)), 3), "p95": round(float(np.percentile(a, 95)), 3),
            "p99": round(float(np.percentile(a, 99)), 3), "mean": round(float(a.mean()), 3)}


def _read_rgb(path: str) -> np.ndarray:
    import cv2

    p = Path(path)
    if not p.is_file():
        raise UsageError(f"image {path!r} does not exist; check the path")
    img = cv2.imread(str(p), cv2.IMREAD_COLOR)
    if img is None:
        raise UsageError(f"cannot read image {path!r}; use a PNG, JPEG, BMP or TIFF file")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _support(specs: list[str], legend: tuple[ClassSpec, ...] | None = None
             ) -> tuple[list[np.ndarray], list[np.ndarray], tuple[str, ...]]:
    """Images (H,W,3) uint8 RGB, label masks (H,W) uint8 and class names (``models.support_io``); UsageError."""
    from models.support_io import load_support_files

    if not specs:
        raise UsageError("--task segment/both needs at least one --support IMG:MASK (an example and its mask)")
    images, labels = load_support_files(specs, _read_rgb, legend, None, UsageError)
    return images, labels.masks, labels.names


def _make_robot(cfg: DeployConfig, rt: Any, size: int) -> Any:
    from robot.registry import make_robot

    motor = rt.manifest.get("motor", {})
    try:
        if cfg.robot == "sim":
            return make_robot("sim", arm=motor.get("arm", "gantry"), size=size, seed=cfg.seed)
        return make_robot(cfg.robot)
    except (KeyError, ValueError, ImportError) as e:
        msg = e.args[0] if e.args else str(e)
        raise UsageError(f"cannot build robot {cfg.robot!r}: {msg}") from None


def deploy(cfg: DeployConfig, log: Any = print) -> Path:
    """Run the session described by ``cfg``; returns the output folder."""
    from models.onnx_segmenter import OnnxSegmenter
    from models.runtime import BundleError, Runtime

    if cfg.bundle is None:
        raise UsageError("--bundle is required: a folder written by `microfarm export`")
    if cfg.steps < 0:
        raise UsageError(f"--steps must be >= 0, got {cfg.steps}")
    if cfg.threads < 0 or cfg.crf_threads < 0:
        raise UsageError(f"--threads and --crf-threads must be >= 0 (0: ONNX Runtime's default), got "
                         f"{cfg.threads} and {cfg.crf_threads}")
    cfg.check_colour_prior()
    cfg.check_scales(cfg.imgsz or None)
    seg_on, reach_on = cfg.task in ("segment", "both"), cfg.task in ("reach", "both")
    support = _support(cfg.support, cfg.class_legend()) if seg_on else None  # bad support: exit 2 before loading
    providers = [p.strip() for p in cfg.providers.split(",") if p.strip()] or ["auto"]
    try:
        rt = Runtime(cfg.bundle, providers=providers if providers != ["auto"] else None, precision=cfg.precision,
                     threads=cfg.threads, model_threads={"crf": cfg.crf_threads})
        need = (["guide", "segment"] + (["crf"] if cfg.crf == "meanfield" else []) if seg_on else []) + \
               (["encoder", "inverse"] if reach_on else [])
        missing = [n for n in need if not rt.has(n)]
        if missing:
            how = "--explore-run DIR" if missing[0] in ("encoder", "inverse") else "--segmenter WEIGHTS"
            raise BundleError(f"the bundle has no {missing[0]} model (has: {', '.join(rt.sessions)}); re-export "
                              f"with {how} or choose another --task")
        seg = None
        if seg_on:
            seg = OnnxSegmenter(rt, crf=cfg.crf, imgsz=cfg.imgsz or None, colour_prior=cfg.check_colour_prior(),
                                crf_gate=cfg.crf_gate, scales=cfg.scale_list(), fusion=cfg.fusion)
            assert support is not None
            seg.set_support(*support)
            if cfg.crf != "none" and not seg.crf_supported:
                log(f"warning: the CRF is off: the bundle's crf.onnx takes {seg.backend.crf_max_labels} labels, this "
                    f"support has {len(seg.classes) + 1} (background and {len(seg.classes)} classes)")
            _ = seg.crf_on  # the CRF gate's check on the support, once, before the first step's timing
        goals = None
        if reach_on:
            if cfg.goal:
                goals = rt.encode_rgb(np.stack([_resize_for(rt, _read_rgb(g)) for g in cfg.goal]))
            elif rt.manifest.get("goals"):
                goals = np.asarray(rt.manifest["goals"], np.float32)
            else:
                raise BundleError("the bundle carries no goals; pass --goal IMG (an image of where to go)")
    except BundleError as e:
        raise UsageError(str(e)) from None
    size = cfg.size or (seg.imgsz if seg is not None else int(rt.entry("encoder")["preprocess"]["size"]))
    robot = _make_robot(cfg, rt, size)
    out = next_run_dir("deploy", cfg.out)
    if cfg.save_masks:
        (out / "masks").mkdir(exist_ok=True)
    log(f"bundle {cfg.bundle} on {', '.join(rt.providers)} ({cfg.precision}); robot {cfg.robot}; task {cfg.task}")
    rows: list[dict[str, Any]] = []
    stopped, t_start = "steps done", time.perf_counter()
    robot.connect()
    try:
        with open(out / "steps.jsonl", "w") as jl:
            k = 0
            while cfg.steps == 0 or k < cfg.steps:
                row = _step(k, robot, rt, seg, goals, out if cfg.save_masks else None)
                rows.append(row)
                jl.write(json.dumps(row) + "\n")
                jl.flush()
                k += 1
    except KeyboardInterrupt:
        stopped = "interrupted (Ctrl-C)"
    finally:
        robot.disconnect()
        _summary(cfg, rt, out, rows, time.perf_counter() - t_start, stopped, goals,
                 _gate(seg) if seg is not None and cfg.crf != "none" else None,
                 seg.sides if seg is not None else None, seg.classes if seg is not None else None,
                 seg.fusion_report() if seg is not None else None)
    return out


def _gate(seg: Any) -> dict[str, Any]:
    """The CRF gate's report for summary.json; crf_on False with the reason where crf.onnx lacks the labels."""
    gate = seg.gate.report()
    if not seg.crf_supported:
        gate.update(crf_on=False, reason=f"crf.onnx takes {seg.backend.crf_max_labels} labels, the support has "
                    f"{len(seg.classes) + 1}")
    return gate


def _resize_for(rt: Any, rgb: np.ndarray) -> np.ndarray:
    import cv2

    s = int(rt.entry("encoder")["preprocess"]["size"])
    return cv2.resize(rgb, (s, s), interpolation=cv2.INTER_AREA)


def _step(k: int, robot: Any, rt: Any, seg: Any, goals: np.ndarray | None, mask_dir: Path | None) -> dict[str, Any]:
    row: dict[str, Any] = {"step": k}
    t0 = time.perf_counter()
    if goals is not None:
        g = k % len(goals)
        t = time.perf_counter()
        cmd = rt.inverse(goals[g:g + 1])[0]
        row["inverse_ms"] = 1e3 * (time.perf_counter() - t)
        t = time.perf_counter()
        sent = robot.send_action(np.clip(cmd, robot.action_low, robot.action_high))
        obs = robot.get_observation()
        row["move_ms"] = 1e3 * (time.perf_counter() - t)
        t = time.perf_counter()
        code = rt.encode_rgb(obs["image"])[0]
        row["encode_ms"] = 1e3 * (time.perf_counter() - t)
        row.update(goal=g, command=[round(float(v), 5) for v in sent],
                   reach_error=float(np.linalg.norm(code - goals[g])))
    else:
        t = time.perf_counter()
        obs = robot.get_observation()
        row["capture_ms"] = 1e3 * (time.perf_counter() - t)
    if seg is not None:
        t = time.perf_counter()
        _, mask = seg.predict(obs["image"])
        row["segment_ms"] = 1e3 * (time.perf_counter() - t)
        row["foreground_fraction"] = round(float((mask > 0).mean()), 5)
        if seg.multiclass:
            row["class_fraction"] = class_fractions(mask, seg.classes)
        if mask_dir is not None:
            import cv2

            ok, buf = cv2.imencode(".png", mask)
            if ok:
                atomic_write_bytes(mask_dir / "masks" / f"step_{k:06d}.png", buf.tobytes())
    row["step_ms"] = 1e3 * (time.perf_counter() - t0)
    return {k2: round(v, 4) if isinstance(v, float) else v for k2, v in row.items()}


def _summary(cfg: DeployConfig, rt: Any, out: Path, rows: list[dict[str, Any]], seconds: float, stopped: str,
             goals: np.ndarray | None, gate: dict[str, Any] | None, sides: tuple[int, ...] | None,
             classes: tuple[str, ...] | None = None, fusion: dict[str, Any] | None = None) -> None:
    stages = ["inverse_ms", "move_ms", "encode_ms", "capture_ms", "segment_ms", "step_ms"]
    lat = {s[:-3]: percentiles([r[s] for r in rows if s in r]) for s in stages if any(s in r for r in rows)}
    compute = [sum(r.get(s, 0.0) for s in ("inverse_ms", "encode_ms", "segment_ms")) for r in rows]
    reach: dict[str, Any] = {}
    if goals is not None and rows:
        errs = [r["reach_error"] for r in rows if "reach_error" in r]
        per_goal = {str(g): round(float(np.mean([r["reach_error"] for r in rows if r.get("goal") == g])), 5)
                    for g in sorted({r["goal"] for r in rows if "goal" in r})}
        reach = {"mean": round(float(np.mean(errs)), 5), "per_goal": per_goal, "n_goals": len(goals),
                 "measure": "L2 distance in code space between goal and the encoded frame after the move"}
    summary = {"bundle": str(cfg.bundle), "robot": cfg.robot, "task": cfg.task, "providers": rt.providers,
               "precision": cfg.precision, "files": rt.files, "steps": len(rows), "seconds": round(seconds, 4),
               "fps": round(len(rows) / seconds, 2) if seconds > 0 and rows else None,
               "compute_fps": round(1e3 * len(rows) / sum(compute), 2) if rows and sum(compute) > 0 else None,
               "latency_ms": lat, "reach_error": reach, "crf_gate": gate,
               "scales": cfg.scale_list() if sides else None, "segment_input_sides": list(sides) if sides else None,
               "foreground_fraction_mean": round(float(np.mean([r["foreground_fraction"] for r in rows])), 5)
               if rows and "foreground_fraction" in rows[0] else None, "classes": list(classes) if classes else None,
               "fusion": fusion, "stopped": stopped}
    if rows and "class_fraction" in rows[0]:
        summary["class_fraction_mean"] = {n: round(float(np.mean([r["class_fraction"][n] for r in rows])), 5)
                                          for n in rows[0]["class_fraction"]}
    atomic_write_json(out / "summary.json", summary)


def cli(argv: list[str]) -> int:
    cfg = parse_config(DeployConfig, argv, prog="microfarm deploy")
    out = deploy(cfg)
    s = json.loads((out / "summary.json").read_text())
    parts = [f"{s['steps']} steps at {s['fps']} fps ({s['stopped']})"]
    if s["reach_error"]:
        parts.append(f"reach error {s['reach_error']['mean']}")
    if "segment" in s["latency_ms"]:
        parts.append(f"segment p50 {s['latency_ms']['segment']['p50']} ms")
    print(", ".join(parts) + f" -> {out}")
    return 0
