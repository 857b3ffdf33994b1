"""`microfarm faults`: stuck-at faults of a bundle's weights against the task metrics (a robustness curve).

    microfarm faults --bundle runs/export/1 --rate 0.001 --rate 0.01 --rate 0.1 --mode zero --mode high --seeds 3

For every mode, rate and seed, the bundle's learned models (``--model``, default encoder, forward, inverse, guide,
segment; ``models.faults``) get that share of their weights stuck, in memory: the bundle is verified (sha256s,
contracts) by ``models.runtime.Runtime`` and only read; faulty copies are written only with ``--save-bundles``. The
same rendered frames and episodes judge every draw:

- **segmentation mIoU** (%): ``--episodes`` 1-shot episodes on ``--frames`` rendered bed frames (the bundle's
  segmentation side, species masks from ``sim.sample_frames``); each episode: a species, a support frame and 2 query
  frames holding it (>= 20 pixels); the guided net alone (guide + segment, foreground where its logit wins), IoU of
  the foreground per query, mean per species, mean over species;
- **reach error** (normalised motor units, L2): on ``--views`` frames of the run's bed at uniform random motor
  positions, |clip(inverse(encode(frame))) - motor|, the command clipped to the manifest's motor range as a robot
  would; mean over views.

Writes ``runs/faults/<N>/`` (or ``--out``; ``robot.faults_report``): ``summary.json`` (config, weights per model,
fault-free metrics, ``references``, the table and every draw), ``faults.csv`` (mode, rate, stuck weights, metric mean
and std across seeds), ``robustness.png`` (both metrics against the rate, one line per mode, +-1 std band, the
fault-free value dashed, what no network gives dotted: every pixel marked, random commands) and with
``--save-bundles`` ``bundles/<mode>_<rate>/``, a faulty copy per mode and rate (first seed) that `microfarm deploy`
loads. The frames are rendered through ``robot.export_cli.SimFrameSource`` (robot reaches sim only there).
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from microfarm_toolkit import (
    UsageError,
    atomic_write_json,
    atomic_write_png,
    atomic_write_text,
    next_run_dir,
    parse_config,
)
from models.faults import FaultyBundle, check_fault, write_faulty_bundle
from robot.faults_report import plot_robustness, summarise, table_csv

__all__ = ["FaultsConfig", "DEFAULT_RATES", "make_episodes", "seg_miou", "reach_error", "references", "run_faults",
           "cli"]

DEFAULT_RATES = (0.001, 0.003, 0.01, 0.03, 0.1)
QUERIES, MIN_PIXELS = 2, 20


def _f(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class FaultsConfig:
    """Stuck-at faults of a bundle's weights: segmentation mIoU and reach error against the fault rate."""

    bundle: Path | None = _f(None, "bundle folder written by `microfarm export` (required; only read)")
    rate: list[float] = dataclasses.field(default_factory=lambda: list(DEFAULT_RATES), metadata={
        "help": "share of each model's weights stuck, in (0, 1] (default 0.001 0.003 0.01 0.03 0.1)"})
    mode: list[Literal["zero", "high", "high-pos"]] = dataclasses.field(
        default_factory=lambda: ["zero", "high"], metadata={
            "help": "zero: reads 0; high: the tensor's max |w| with the weight's sign; high-pos: +max (default zero, "
                    "high)"})
    seeds: int = _f(3, "fault draws per mode and rate")
    seed: int = _f(0, "first fault seed (seeds seed .. seed+seeds-1) and the frames' render seed")
    model: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "a model to fault (default: encoder, forward, inverse, guide, segment, those in the bundle)"})
    biases: bool = _f(False, "also fault the biases of Conv / Gemm")
    episodes: int = _f(48, "1-shot segmentation episodes (2 queries each)")
    frames: int = _f(32, "rendered segmentation frames the episodes come from")
    views: int = _f(64, "rendered views of the bed for the reach error")
    threads: int = _f(1, "ONNX Runtime intra-op threads")
    save_bundles: bool = _f(False, "also write a faulty copy of the bundle per mode and rate (first seed)")
    out: Path | None = _f(None, "output folder (default runs/faults/<N>)")


def make_episodes(species: np.ndarray, n: int, seed: int) -> list[tuple[int, int, list[int]]]:
    """``n`` episodes (species id, support frame, ``QUERIES`` query frames) from species masks (F,H,W) uint8: the
    species seen in >= 2 frames (>= ``MIN_PIXELS`` pixels) in turn, the frames drawn at random among those."""
    present = {s: np.flatnonzero((species == s).sum((1, 2)) >= MIN_PIXELS) for s in range(1, int(species.max()) + 1)}
    eligible = [s for s, f in present.items() if len(f) >= 2]
    rng = np.random.default_rng(seed)
    eps = []
    for j in range(n if eligible else 0):
        s = eligible[j % len(eligible)]
        f = rng.permutation(present[s])[:1 + QUERIES]
        eps.append((s, int(f[0]), [int(i) for i in f[1:]]))
    return eps


def seg_miou(rt: Any, x: np.ndarray, species: np.ndarray, episodes: list[tuple[int, int, list[int]]]) -> float:
    """Class-wise mIoU (%) of ``rt``'s guided net on ``episodes``; x (F,3,S,S) float32 RGB 0..1, species (F,S,S)."""
    per: dict[int, list[float]] = {}
    for s, sup, queries in episodes:
        g = rt.guide(x[sup:sup + 1], (species[sup:sup + 1, None] == s).astype(np.float32))
        logits = rt.segment(x[queries], g)
        for pred, gt in zip(logits[:, 1] > logits[:, 0], species[queries] == s, strict=True):
            union = (pred | gt).sum()
            per.setdefault(s, []).append(float((pred & gt).sum() / union) if union else 1.0)
    return float(100.0 * np.mean([np.mean(v) for v in per.values()])) if per else float("nan")


def reach_error(rt: Any, images: np.ndarray, motors: np.ndarray) -> float:
    """Mean L2 |clip(inverse(encode(image))) - motor| over views; images (V,H,W,3) uint8, motors (V,D) normalised."""
    m = rt.manifest.get("motor", {})
    cmd = np.clip(rt.inverse(rt.encode_rgb(images)), m.get("low", 0.0), m.get("high", 1.0))
    return float(np.linalg.norm(cmd - motors, axis=1).mean())


def references(seg: Any, feat: Any) -> dict[str, float]:
    """What no network gives, to read the curves against: ``miou_all_foreground``, the mIoU of marking every pixel
    (as ``seg_miou``), and ``reach_error_random_command``, the reach error of uniform random commands in [0, 1]^D."""
    out = {}
    if seg is not None:
        per: dict[int, list[float]] = {}
        for s, _, queries in seg[2]:
            per.setdefault(s, []).extend(float((seg[1][q] == s).mean()) for q in queries)
        out["miou_all_foreground"] = float(100.0 * np.mean([np.mean(v) for v in per.values()]))
    if feat is not None:
        u = np.random.default_rng(0).uniform(0, 1, (4096, feat[1].shape[1]))
        out["reach_error_random_command"] = float(np.mean([np.linalg.norm(u - m, axis=1).mean() for m in feat[1]]))
    return out


def _check(cfg: FaultsConfig) -> FaultyBundle:
    """The bundle, verified and opened; a one-line ``UsageError`` for any bad flag (before anything is written)."""
    from models.faults import FaultError
    from models.runtime import BundleError

    if cfg.bundle is None:
        raise UsageError("--bundle is required: a folder written by `microfarm export`")
    try:
        for r in cfg.rate:
            check_fault(r, "zero")
        for m in cfg.mode:
            check_fault(0.5, m)
    except FaultError as e:
        raise UsageError(f"--rate/--mode: {e}") from None
    for name, v, low in (("seeds", cfg.seeds, 1), ("episodes", cfg.episodes, 1), ("frames", cfg.frames, 2),
                         ("views", cfg.views, 1), ("threads", cfg.threads, 1)):
        if v < low:
            raise UsageError(f"--{name} must be >= {low}, got {v}")
    if not cfg.bundle.is_dir():
        raise UsageError(f"--bundle {str(cfg.bundle)!r} is not a folder; make a bundle with `microfarm export`")
    try:
        fb = FaultyBundle(cfg.bundle, cfg.model, cfg.biases, cfg.threads)
    except BundleError as e:
        raise UsageError(str(e)) from None
    have = fb.rt.sessions
    if not ({"guide", "segment"} <= set(have) or {"encoder", "inverse"} <= set(have)):
        raise UsageError(f"the bundle {str(cfg.bundle)!r} has neither guide+segment nor encoder+inverse to measure")
    return fb


def _measure(rt: Any, seg: Any, feat: Any) -> dict[str, float]:
    out = {}
    if seg is not None:
        out["miou"] = seg_miou(rt, *seg)
    if feat is not None:
        out["reach_error"] = reach_error(rt, *feat)
    return out


def run_faults(cfg: FaultsConfig, log: Any = print) -> Path:
    """The command as a function: measure every draw, write the outputs; returns the output folder."""
    from tqdm import tqdm

    from robot.export_cli import SimFrameSource

    fb = _check(cfg)
    man, src = fb.rt.manifest, SimFrameSource()
    seg = feat = None
    t0 = time.perf_counter()
    if {"guide", "segment"} <= set(man["models"]):
        size = int(man["models"]["guide"]["preprocess"]["size"])
        log(f"rendering {cfg.frames} segmentation frames ({size}x{size})")
        imgs, species = src.segmentation(size, cfg.frames, cfg.seed + 2)
        eps = make_episodes(species, cfg.episodes, cfg.seed)
        seg = (imgs.transpose(0, 3, 1, 2).astype(np.float32) / np.float32(255), species, eps) if eps else None
        if not eps:
            log(f"no species in >= 2 of the {cfg.frames} frames: segmentation not measured (raise --frames)")
    if {"encoder", "inverse"} <= set(man["models"]):
        pre = man["models"]["encoder"]["preprocess"]
        log(f"rendering {cfg.views} views of the bed ({man.get('motor', {}).get('arm', 'gantry')})")
        feat = src.features(man.get("motor", {}).get("arm", "gantry"), int(pre["size"]), cfg.views, cfg.seed + 1)
    base = _measure(fb.rt, seg, feat)
    if not base:
        raise UsageError("nothing to measure: no segmentation episodes and no encoder+inverse; raise --frames")
    log(f"fault-free: {base}")
    out = next_run_dir("faults", cfg.out)
    seeds = range(cfg.seed, cfg.seed + cfg.seeds)
    draws = []
    jobs = [(mode, rate, s) for mode in dict.fromkeys(cfg.mode) for rate in dict.fromkeys(cfg.rate) for s in seeds]
    for mode, rate, s in tqdm(jobs, desc="faults", unit="draw"):
        rt, rec = fb.runtime(rate, mode, s)
        draws.append({"mode": mode, "rate": rate, "seed": s, **_measure(rt, seg, feat),
                      "faulted": {m: r["faulted"] for m, r in rec.items()},
                      "changed": {m: r["changed"] for m, r in rec.items()}})
        if cfg.save_bundles and s == cfg.seed:
            write_faulty_bundle(cfg.bundle, out / "bundles" / f"{mode}_{rate:g}", rate, mode, s, list(fb.models),
                                cfg.biases)
    table, weights, refs = summarise(draws, list(base)), fb.weights(), references(seg, feat)
    atomic_write_json(out / "summary.json", {
        "config": dataclasses.asdict(cfg), "models": list(fb.models), "weights": weights,
        "episodes": len(seg[2]) if seg else 0, "views": cfg.views if feat else 0, "fault_free": base,
        "references": refs, "table": table, "draws": draws, "std": "population std (ddof 0) across seeds",
        "bundle_sha256": {n: e["sha256"] for n, e in man["models"].items()}, "seconds": time.perf_counter() - t0})
    atomic_write_text(out / "faults.csv", table_csv(table, base))
    atomic_write_png(out / "robustness.png", plot_robustness(table, base, weights, refs))
    log(f"{len(draws)} draws in {time.perf_counter() - t0:.0f} s -> {out}")
    return out


def cli(argv: list[str]) -> int:
    run_faults(parse_config(FaultsConfig, argv, prog="microfarm faults"))
    return 0
