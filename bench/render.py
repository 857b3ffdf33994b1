"""Env frames per second against raw `pybullet.getCameraImage` on the same scene, side by side.

    python bench/render.py [--frames 300] [--arm gantry]

Prints, for 64x64 and 256x256: the env's step rate (move + render + observation), the raw render rate
(getCameraImage alone, same view, same client) and their ratio. Target: ratio >= 0.8 at 64x64.
The two are interleaved in rounds so that machine noise hits both alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pybullet as p

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import sim  # noqa: E402


def measure(arm: str, size: int, frames: int, rounds: int = 5) -> tuple[float, float]:
    env = gym.make(sim.ENV_IDS[arm], size=size).unwrapped
    env.reset(seed=0)
    targets = np.random.default_rng(0).random((frames, env.dof)).astype(np.float32)
    pos, rot = env.arm.camera_pose()
    view, proj = env.camera.view_matrix(pos, rot), env.camera.projection
    light = env.scene.render_kwargs()
    t_env = t_raw = 0.0
    per_round = max(1, frames // rounds)
    for r in range(rounds):
        t0 = time.perf_counter()
        for a in targets[r * per_round:(r + 1) * per_round]:
            env.step(a)
        t1 = time.perf_counter()
        for _ in range(per_round):
            p.getCameraImage(size, size, view, proj, renderer=p.ER_TINY_RENDERER, flags=p.ER_NO_SEGMENTATION_MASK,
                             physicsClientId=env.client, **light)
        t2 = time.perf_counter()
        t_env, t_raw = t_env + (t1 - t0), t_raw + (t2 - t1)
    env.close()
    n = per_round * rounds
    return n / t_env, n / t_raw


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=300)
    ap.add_argument("--arm", choices=sorted(sim.ENV_IDS), default="gantry")
    args = ap.parse_args()
    print(f"arm={args.arm}  frames={args.frames} per size")
    print(f"{'size':>9} {'env fps':>9} {'raw fps':>9} {'env/raw':>8}")
    for size in (64, 256):
        env_fps, raw_fps = measure(args.arm, size, args.frames if size == 64 else max(20, args.frames // 10))
        print(f"{size:>4}x{size:<4} {env_fps:9.1f} {raw_fps:9.1f} {env_fps / raw_fps:8.2f}")


if __name__ == "__main__":
    main()
