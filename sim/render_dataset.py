"""`microfarm render`: labelled datasets from the simulator (format in docs/CONTRACTS.md and the README).

- ``features``: camera images of one fixed bed with their normalised motor positions (random or on a
  grid), for the autoencoder and fixed test sets: ``rgb/<stem>.png``, ``index.json``, ``features.npz``.
- ``segmentation``: random layouts and camera poses (height varies too), domain randomisation on by
  default: ``rgb/``, ``species/`` (uint8 species id), ``instance/`` (uint16 instance id), ``index.json``
  with the species table (crop/weed) and the four class folds.

Frame ``i`` depends only on (seed, i), so worker count does not change the output, and a re-run with the
same arguments skips frames whose files exist. Every file is written atomically.
"""

from __future__ import annotations

import dataclasses
import math
import multiprocessing as mp
import os
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
    next_run_dir,
    parse_config,
)
from sim.arms import BED_SIZE, camera_xy
from sim.envs import ENV_IDS

TASKS = ("features", "segmentation")


@dataclasses.dataclass
class RenderConfig:
    """Render a labelled dataset from the simulated microfarm."""

    task: Literal["features", "segmentation"] | None = dataclasses.field(
        default=None, metadata={"help": "what to render (required)"})
    n: int = dataclasses.field(default=1000, metadata={"help": "number of frames (grid: rounded down to k*k)"})
    out: Path | None = dataclasses.field(default=None, metadata={"help": "output folder (default runs/render/<N>)"})
    size: int | None = dataclasses.field(default=None, metadata={
        "help": "image side in pixels (default 64 for features, 256 for segmentation)"})
    seed: int = dataclasses.field(default=0, metadata={"help": "seed of camera poses, layouts and noise"})
    arm: Literal["gantry", "arm"] = dataclasses.field(default="gantry", metadata={"help": "camera arm"})
    workers: int = dataclasses.field(default=1, metadata={"help": "worker processes (one PyBullet client each)"})
    grid: bool = dataclasses.field(default=False, metadata={
        "help": "features: motor positions on a regular k x k grid instead of uniform random"})
    scene_seed: int = dataclasses.field(default=0, metadata={
        "help": "features: the bed layout (0 = the exploration envs' default bed)"})
    randomize: bool | None = dataclasses.field(default=None, metadata={
        "help": "domain randomisation (default: off for features, on for segmentation)"})
    views_per_layout: int = dataclasses.field(default=4, metadata={"help": "segmentation: camera poses per layout"})
    density: float = dataclasses.field(default=1.0, metadata={"help": "plant count factor"})

    def validate(self) -> None:
        if self.task is None:
            raise UsageError(f"--task is required; choose one of: {', '.join(TASKS)}")
        if self.n < 1:
            raise UsageError(f"--n must be at least 1, got {self.n}")
        if self.workers < 1:
            raise UsageError(f"--workers must be at least 1, got {self.workers}")
        if self.size is not None and not 8 <= self.size <= 2048:
            raise UsageError(f"--size must be between 8 and 2048 pixels, got {self.size}")
        if self.views_per_layout < 1:
            raise UsageError(f"--views-per-layout must be at least 1, got {self.views_per_layout}")
        if self.density <= 0:
            raise UsageError(f"--density must be positive, got {self.density}")


def _frame_rng(seed: int, i: int, stream: int = 0) -> np.random.Generator:
    """The generator of frame (or layout) ``i``; ``stream`` separates independent uses."""
    return np.random.default_rng([seed, i, stream, 7919])


def features_motor(cfg: RenderConfig, i: int, dof: int = 2) -> np.ndarray:
    """Normalised motor position (dof,) of features frame ``i``: grid point or uniform random."""
    if cfg.grid:
        k = math.isqrt(cfg.n)
        return np.array([(i % k) / max(k - 1, 1), (i // k) / max(k - 1, 1)], np.float32)
    return _frame_rng(cfg.seed, i).random(dof).astype(np.float32)


def segmentation_pose(cfg: RenderConfig, i: int) -> np.ndarray:
    """Normalised (a, b, height) of segmentation frame ``i``; the camera's x/y lies over the bed."""
    rng = _frame_rng(cfg.seed, i)
    while True:
        m = rng.random(3).astype(np.float32)
        xy = camera_xy(cfg.arm, m[:2])
        if np.all((xy >= 0.0) & (xy <= BED_SIZE)):
            return m


# -- worker side: one env per process -----------------------------------------------------------------
_ENV: Any = None
_ENV_KEY: tuple | None = None


def _env(cfg: RenderConfig, scene_seed: int, randomize: bool) -> Any:
    global _ENV, _ENV_KEY
    import gymnasium as gym

    import sim  # noqa: F401  (registers the envs)

    seg = cfg.task == "segmentation"
    key = (cfg.arm, cfg.size, seg, randomize, cfg.density)
    if _ENV is None or _ENV_KEY != key:
        if _ENV is not None:
            _ENV.close()
        _ENV = gym.make(ENV_IDS[cfg.arm], size=cfg.size, masks=seg, dof=3 if seg else 2,
                        scene_seed=scene_seed, randomize=randomize, density=cfg.density).unwrapped
        _ENV_KEY = key
        _ENV.reset(seed=scene_seed)
    elif _ENV.scene_seed != scene_seed:
        _ENV.scene_seed = scene_seed
        _ENV.reset(seed=scene_seed)
    return _ENV


def _render_one(job: tuple[RenderConfig, Path, int, bool]) -> dict[str, Any]:
    cfg, out, i, randomize = job
    stem = f"{i:06d}"
    rec: dict[str, Any] = {"stem": stem, "rgb": f"rgb/{stem}.png"}
    if cfg.task == "features":
        motor = features_motor(cfg, i)
        rec["motor"] = [float(v) for v in motor]
        if not (out / rec["rgb"]).exists():
            env = _env(cfg, cfg.scene_seed, randomize)
            env.np_random = _frame_rng(cfg.seed, i)
            obs, _, _, _, _ = env.step(motor)
            atomic_write_png(out / rec["rgb"], obs["image"])
        return rec
    rec["species"], rec["instance"] = f"species/{stem}.png", f"instance/{stem}.png"
    if all((out / rec[k]).exists() for k in ("rgb", "species", "instance")):
        species = cv2.imread(str(out / rec["species"]), cv2.IMREAD_UNCHANGED)
    else:
        layout = i // cfg.views_per_layout
        env = _env(cfg, int(_frame_rng(cfg.seed, layout, stream=1).integers(2**31)), randomize)
        env.np_random = _frame_rng(cfg.seed, i)
        obs, _, _, _, info = env.step(segmentation_pose(cfg, i))
        species = info["species_mask"]
        atomic_write_png(out / rec["species"], species)
        atomic_write_png(out / rec["instance"], info["instance_mask"])
        atomic_write_png(out / rec["rgb"], obs["image"])
    ids, counts = np.unique(species, return_counts=True)
    rec["species_pixels"] = {str(int(k)): int(c) for k, c in zip(ids, counts, strict=True) if k != 0}
    return rec


def render(cfg: RenderConfig) -> Path:
    """Render the dataset described by ``cfg``; returns the output folder."""
    cfg.validate()
    if cfg.size is None:
        cfg.size = 64 if cfg.task == "features" else 256
    randomize = cfg.randomize if cfg.randomize is not None else cfg.task == "segmentation"
    n = math.isqrt(cfg.n) ** 2 if (cfg.grid and cfg.task == "features") else cfg.n
    out = next_run_dir("render", cfg.out)
    for sub in ("rgb",) + (("species", "instance") if cfg.task == "segmentation" else ()):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(cfg, out, i, randomize) for i in range(n)]
    bar = tqdm(total=n, desc=f"render {cfg.task}", unit="frame")
    if cfg.workers == 1:
        records = []
        for job in jobs:
            records.append(_render_one(job))
            bar.update()
    else:
        with mp.get_context("spawn").Pool(cfg.workers) as pool:
            records = []
            for rec in pool.imap(_render_one, jobs, chunksize=max(1, cfg.views_per_layout)):
                records.append(rec)
                bar.update()
    bar.close()
    _write_index(cfg, out, records, randomize)
    return out


def _write_index(cfg: RenderConfig, out: Path, records: list[dict[str, Any]], randomize: bool) -> None:
    from sim.species import FOLDS, SPECIES

    index: dict[str, Any] = {"task": cfg.task, "arm": cfg.arm, "env_id": ENV_IDS[cfg.arm], "size": cfg.size,
                             "seed": cfg.seed, "randomize": randomize, "density": cfg.density}
    if cfg.task == "features":
        motor = np.asarray([r["motor"] for r in records], np.float32)
        images = np.stack([cv2.cvtColor(cv2.imread(str(out / r["rgb"])), cv2.COLOR_BGR2RGB) for r in records])
        index.update(motor_dim=int(motor.shape[1]), scene_seed=cfg.scene_seed, grid=cfg.grid,
                     env_kwargs={"size": cfg.size, "scene_seed": cfg.scene_seed, "randomize": randomize,
                                 "density": cfg.density})
        with atomic_path(out / "features.npz") as tmp, open(tmp, "wb") as f:
            np.savez_compressed(f, images=images, motor=motor)
    else:
        index.update(views_per_layout=cfg.views_per_layout,
                     species=[{"id": s.id, "name": s.name, "kind": s.kind, "fold": s.fold} for s in SPECIES],
                     folds=[list(f) for f in FOLDS])
    index["frames"] = records
    atomic_write_json(out / "index.json", index)


def cli(argv: list[str]) -> int:
    cfg = parse_config(RenderConfig, argv, prog="microfarm render")
    if cfg.out is not None and cfg.out.exists() and not os.access(cfg.out, os.W_OK):
        raise UsageError(f"output folder {str(cfg.out)!r} is not writable; pass a writable --out")
    out = render(cfg)
    print(f"wrote {cfg.n if not cfg.grid else math.isqrt(cfg.n) ** 2} {cfg.task} frames to {out}")
    return 0
