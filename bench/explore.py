"""Iterations per second of the full curiosity loop next to the raw render rate, and peak memory, in one run.

    python bench/explore.py [--steps 800] [--arm gantry] [--threads 1] [--parallel auto|process|thread|off]
                            [--rounds 1] [--encoder FILE]

1. The full loop (``robot.explore.run``, the paper preset: SOM goals, learning progress, memory 320 with
   p 0.1, 2 epochs, batch 16, metrics logged every iteration) for ``--steps`` iterations on the SimRobot,
   without plots or export. The rate is reported for the whole loop, for the memory-filling phase (the first
   320 iterations, cheaper fits) and for the steady state (full memory), from the run's own ``metrics.csv``
   clock; the time of a 5000-iteration run is projected from those two. ``--parallel process`` runs the
   parallel loop with the inverse model fitted in a child process (the forward one in the loop's thread, the
   encoder split over two threads), ``thread`` the same with a worker thread instead of the child, ``off`` the
   sequential loop, ``auto`` (the ``ExploreConfig`` default) whichever of off and the parallel loop (process
   for runs of at least ``PROCESS_MIN_STEPS`` iterations, else thread) measures faster during the run; all
   compute the same run, bit for bit. The loop's fits are counted by the mode they ran in.
2. The raw render rate: ``pybullet.getCameraImage`` 64x64 (TinyRenderer) on the same scene, same view.
3. Per-iteration parts, measured alone: one online fit on 336 samples (memory 320 + 16 recent), encoding
   one frame (``ConvAutoencoder.encode_images``, and the loop's bit-identical ``FrameEncoder`` on one thread),
   one env step (move + render + observation), the test-set evaluation.
4. The arithmetic floor: the floating-point operations of one fit and one encoding (counted by
   ``torch.utils.flop_counter.FlopCounterMode``), the rate each part reached (GFLOP/s), and (with
   ``--threads 1``) the time a 5000-iteration run needs at those one-core rates even if its work were spread
   over 2 cores with no loss at all (encode + fit + render, divided by 2). The loop is sequential (each
   move needs the freshly fitted inverse model), so a real run cannot be faster than this figure unless the
   kernels themselves get faster. The floor is defined with ``encode_images`` (as before the loop had its
   faster encoder); a second figure uses the loop's one-core encoder. The ratio of the projected loop time
   to each floor is printed (1.0 = the loop reaches the floor).
5. With ``--rounds N`` all of the above N times in a row, each in a fresh process, and the N ratios, their
   median and their best (other jobs on the two cores slow some rounds: the best is what the loop does).
6. Peak resident memory of this process (``resource.getrusage``, ru_maxrss), of the loop's fit process
   (its ``VmHWM`` when it was stopped; 0 without one) and their sum.

The target of issue 3: a 5000-iteration memory-320 run in at most 60 s on 2 cores, peak RSS under 1.5 GB.
Encoder weights: ``--encoder``, else the arm's default weights, else an untrained paper-size autoencoder
(the cost of encoding does not depend on the weights).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import resource
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _encoder(path: str | None, arm: str, tmp: Path) -> Path:
    from robot.explore import default_encoder_path

    if path:
        return Path(path)
    default = default_encoder_path(arm)
    if default.is_file():
        return default
    import torch

    from models.autoencoder import AutoencoderConfig, ConvAutoencoder
    from models.weights import save_weights

    torch.manual_seed(0)
    cfg = AutoencoderConfig()
    print(f"(no {default.name}: timing an untrained paper-size autoencoder)")
    return save_weights(tmp / "encoder.safetensors", ConvAutoencoder(cfg), cfg.to_dict(), kind="autoencoder")


@contextlib.contextmanager
def _phase_clock(steps: int, fill: int = 320) -> Iterator[dict[str, float]]:
    """Wall seconds the loop spends in its fits (``OnlineModels.fit``, with the test-set errors when they come
    with it, and the interest, position and condition updates that run while the fit process finishes),
    encodings (``FrameEncoder``) and moves (``Robot.send_action``: move + render) once the memory is full
    (iterations fill + 1 .. steps), summed; "n" = those iterations; "fits <mode>": the number of all the run's
    fits in each mode (process: the inverse model in the child process). Patches the classes while the block
    runs."""
    from robot.base import Robot
    from robot.explore_parallel import FrameEncoder
    from robot.online import OnlineModels

    acc = {"fit": 0.0, "encode": 0.0, "move+render": 0.0, "n": 0.0}
    fits = [0]
    saved = [(OnlineModels, "fit"), (FrameEncoder, "__call__"), (Robot, "send_action")]
    originals = [getattr(c, n) for c, n in saved]

    def timed(fn: Any, key: str) -> Any:
        def wrapper(*a: Any, **k: Any) -> Any:
            if key == "fit":
                m = a[0]
                mode = m.mode if m.mode != "process" or m.process_ready() else "thread"
                acc[f"fits {mode}"] = acc.get(f"fits {mode}", 0.0) + 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                if key == "fit":
                    fits[0] += 1
                it = fits[0] if key == "fit" else fits[0] + 1  # a move and its encoding come before its fit
                if fill < it <= steps:
                    acc[key] += time.perf_counter() - t0
                    acc["n"] += key == "fit"
        return wrapper

    for (cls, name), fn, key in zip(saved, originals, ("fit", "encode", "move+render"), strict=True):
        setattr(cls, name, timed(fn, key))
    try:
        yield acc
    finally:
        for (cls, name), fn in zip(saved, originals, strict=True):
            setattr(cls, name, fn)


def loop_rate(steps: int, arm: str, threads: int, encoder: Path, out: Path,
              parallel: str | None = None) -> dict[str, float]:
    from robot.explore import ExploreConfig, run

    par = {} if parallel is None else {"parallel": parallel}
    cfg = ExploreConfig(arm=arm, steps=steps, memory_size=320, memory_prob=0.1, epochs=2, threads=threads,
                        encoder=encoder, out=out, export=False, plots=False, progress=False,
                        checkpoint_every=10**9, **par)
    t0 = time.perf_counter()
    with _phase_clock(steps) as phases:
        run(cfg)
    total = time.perf_counter() - t0
    with open(out / "metrics.csv", newline="") as f:
        el = {int(float(r["iteration"])): float(r["elapsed_s"]) for r in csv.DictReader(f)}
    fill = min(320, steps)
    t_fill = el[fill]
    res = {"loop_it_s": steps / el[steps], "fill_it_s": fill / t_fill, "total_s": total,
           "setup_s": total - el[steps]}
    if steps > fill + 50:
        res["steady_it_s"] = (steps - fill) / (el[steps] - t_fill)
        res["projected_5000_s"] = t_fill + (5000 - fill) / res["steady_it_s"]
        n = max(phases["n"], 1.0)
        res.update({f"phase {k}": v / n * 1e3 for k, v in phases.items() if k != "n" and not k.startswith("fits")})
    res.update({k: v for k, v in phases.items() if k.startswith("fits")})
    return res


def render_rate(arm: str, frames: int) -> tuple[float, float]:
    import gymnasium as gym
    import pybullet as p

    import sim

    env = gym.make(sim.ENV_IDS[arm], size=64).unwrapped
    env.reset(seed=0)
    pos, rot = env.arm.camera_pose()
    view, proj = env.camera.view_matrix(pos, rot), env.camera.projection
    light = env.scene.render_kwargs()
    targets = np.random.default_rng(0).random((frames, env.dof)).astype(np.float32)
    t0 = time.perf_counter()
    for _ in range(frames):
        p.getCameraImage(64, 64, view, proj, renderer=p.ER_TINY_RENDERER, flags=p.ER_NO_SEGMENTATION_MASK,
                         physicsClientId=env.client, **light)
    t1 = time.perf_counter()
    for a in targets:
        env.step(a)
    t2 = time.perf_counter()
    env.close()
    return frames / (t1 - t0), frames / (t2 - t1)


def _flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def parts_ms(encoder: Path, threads: int, reps: int = 20) -> tuple[dict[str, float], dict[str, int]]:
    """Milliseconds per call of the loop's parts, and the floating-point operations of fit and encode."""
    import torch

    from robot.explore import load_encoder
    from robot.explore_parallel import FrameEncoder
    from robot.online import OnlineModels

    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    models = OnlineModels(2, 32, (320, 320), seed=0)
    x, y = rng.random((336, 2)).astype(np.float32), rng.standard_normal((336, 32)).astype(np.float32) * 0.1
    ae = load_encoder(encoder)
    fast = FrameEncoder(ae)  # one thread, as the floor wants
    img = (rng.random((1, 64, 64, 3)) * 255).astype(np.uint8)
    out = {}
    for name, fn in (("fit (336 samples, 2 epochs)", lambda: models.fit(x, y, rng, 2, 16)),
                     ("encode 1 frame", lambda: ae.encode_images(img)),
                     (FAST_ENC, lambda: fast(img)),
                     ("test-set errors (64)", lambda: models.test_errors(x[:64], y[:64]))):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out[name] = (time.perf_counter() - t0) / reps * 1e3
    flops = {"fit (336 samples, 2 epochs)": _flops(lambda: models.fit(x, y, rng, 2, 16)),
             "encode 1 frame": _flops(lambda: ae.encode_images(img))}
    return out, flops


FAST_ENC = "encode 1 frame (loop's FrameEncoder, 1 thread)"


def arithmetic_floor(parts: dict[str, float], flops: dict[str, int], render_ms: float, cores: int = 2,
                     steps: int = 5000, memory: int = 320, recent: int = 16,
                     enc_name: str = "encode 1 frame") -> float:
    """Seconds of a ``steps``-iteration run at the measured rates of fit, encode and render, spread over
    ``cores`` with no loss. A fit's work is proportional to its samples: min(i, memory) + recent at move i.
    ``enc_name``: which measured encoding (``parts`` key) the floor uses."""
    fit_name = "fit (336 samples, 2 epochs)"
    samples = sum(min(i, memory) + recent for i in range(steps))
    fit_s = parts[fit_name] / 1e3 * samples / (memory + recent)
    return (fit_s + steps * (parts[enc_name] + render_ms) / 1e3) / cores


def one_round(args: argparse.Namespace, enc: Path, run_dir: Path, parallel: str) -> dict[str, float]:
    """One side-by-side measurement: the loop, the raw render rate and the parts alone; prints them and returns
    {"proj": projected 5000-it loop s, "floor", "fast_floor"} (floors only with --threads 1)."""
    loop = loop_rate(args.steps, args.arm, args.threads, enc, run_dir, parallel)
    raw_fps, env_fps = render_rate(args.arm, args.render_frames)
    parts, flops = parts_ms(enc, args.threads)
    print(f"full loop (memory 320, 2 epochs): {loop['loop_it_s']:.1f} it/s overall, "
          f"{loop['fill_it_s']:.1f} it/s while the memory fills"
          + (f", {loop['steady_it_s']:.1f} it/s with a full memory ({1e3 / loop['steady_it_s']:.1f} ms/it)"
             if "steady_it_s" in loop else ""))
    if "phase fit" in loop:
        ph = {k[6:]: v for k, v in loop.items() if k.startswith("phase ")}
        rest = 1e3 / loop["steady_it_s"] - sum(ph.values())
        print("loop with a full memory, per iteration: " + ", ".join(f"{k} {v:.1f} ms" for k, v in ph.items())
              + f", rest (interest, memory, metrics, hull, CSV) {rest:.1f} ms")
    print(f"raw render (getCameraImage 64x64): {raw_fps:.1f} fps ({1e3 / raw_fps:.1f} ms/frame); "
          f"env step (move + render): {env_fps:.1f} fps")
    print("fits by mode: " + ", ".join(f"{k[5:]} {v:.0f}" for k, v in loop.items() if k.startswith("fits ")))
    print("parts: " + ", ".join(f"{k} {v:.1f} ms" for k, v in parts.items()))
    print("arithmetic: " + ", ".join(f"{k} {f / 1e9:.2f} GFLOP at {f / 1e6 / parts[k]:.0f} GFLOP/s"
                                     for k, f in flops.items()))
    out: dict[str, float] = {}
    if args.threads == 1:
        out["floor"] = arithmetic_floor(parts, flops, 1e3 / raw_fps)
        out["fast_floor"] = arithmetic_floor(parts, flops, 1e3 / raw_fps, enc_name=FAST_ENC)
        print(f"arithmetic floor of a 5000-iteration run at these one-core rates spread over 2 cores with perfect "
              f"overlap: {out['floor']:.0f} s (target <= 60 s); with the loop's one-core encoder: "
              f"{out['fast_floor']:.0f} s")
    else:
        print("(the arithmetic floor is printed with --threads 1: it spreads one-core rates over the 2 cores)")
    if "projected_5000_s" in loop:
        out["proj"] = proj = loop["projected_5000_s"]
        print(f"projected 5000-iteration run: {proj:.0f} s of loop "
              f"(+ {loop['setup_s']:.0f} s setup) (target <= 60 s)")
        if "floor" in out:
            print(f"ratio loop / floor: {proj / out['floor']:.2f}x (floor as defined, encode_images; target <= 1.3x); "
                  f"loop / floor with the loop's encoder: {proj / out['fast_floor']:.2f}x")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--steps", type=int, default=800, help="loop iterations (> 370 for a steady-state rate)")
    ap.add_argument("--arm", choices=("gantry", "arm"), default="gantry")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the loop")
    ap.add_argument("--parallel", choices=("auto", "process", "thread", "off"), default=None,
                    help="the loop's mode (default: ExploreConfig's default, auto)")
    ap.add_argument("--render-frames", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=1,
                    help="repeat the whole measurement (loop, render, parts) this many times; the ratios of every "
                         "round, their median and their best are printed (other jobs on the cores slow some rounds)")
    ap.add_argument("--encoder", default=None, help="encoder weights (default: the arm's default weights)")
    args = ap.parse_args()
    if args.steps < 1 or args.rounds < 1:
        ap.error("--steps and --rounds must be >= 1")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    from robot.explore import ExploreConfig

    parallel = str(ExploreConfig.parallel) if args.parallel is None else args.parallel
    print(f"arm={args.arm} steps={args.steps} threads={args.threads} parallel={parallel} cpus={os.cpu_count()} "
          f"load(1 min)={load:.1f}")
    if args.rounds > 1:
        _rounds(args.rounds)
        return
    with tempfile.TemporaryDirectory() as tmp:
        enc = _encoder(args.encoder, args.arm, Path(tmp))
        one_round(args, enc, Path(tmp) / "run", parallel)
    from robot.online_proc import peak_child_rss_mb

    own, child = _peak_rss_mb(), peak_child_rss_mb()
    print(f"peak RSS: {own:.0f} MB (this process) + {child:.0f} MB (the fit process) = {own + child:.0f} MB "
          "(target < 1500 MB)")


def _rounds(n: int) -> None:
    """Run this bench ``n`` times in a row, each in a fresh process (so that each round's peak RSS is a single
    run's), print each round's output and then the ratios' median and best."""
    import re
    import subprocess

    argv, skip = [], False
    for a in sys.argv[1:]:  # every flag but --rounds (and its value)
        if skip or a == "--rounds" or a.startswith("--rounds="):
            skip = a == "--rounds"
            continue
        argv.append(a)
    ratios: list[tuple[float, float]] = []
    peaks: list[float] = []
    for i in range(n):
        print(f"-- round {i + 1} of {n} (load(1 min)={os.getloadavg()[0]:.1f})", flush=True)
        done = subprocess.run([sys.executable, __file__, *argv, "--rounds", "1"], capture_output=True, text=True)
        print(done.stdout, end="", flush=True)
        if done.returncode:
            sys.exit(f"round {i + 1} failed: {done.stderr.strip().splitlines()[-1:]}")
        m = re.search(r"ratio loop / floor: ([0-9.]+)x.*encoder: ([0-9.]+)x", done.stdout)
        if m:
            ratios.append((float(m.group(1)), float(m.group(2))))
        m = re.search(r"= ([0-9.]+) MB \(target", done.stdout)
        if m:
            peaks.append(float(m.group(1)))
    if ratios:
        r, f = [a for a, _ in ratios], [b for _, b in ratios]
        print(f"ratio loop / floor over {len(r)} rounds: " + ", ".join(f"{x:.2f}x" for x in r)
              + f"; median {float(np.median(r)):.2f}x, best {min(r):.2f}x (target <= 1.3x); with the loop's "
              f"encoder: median {float(np.median(f)):.2f}x, best {min(f):.2f}x")
    if peaks:
        print(f"peak RSS of a round (loop + fit process): at most {max(peaks):.0f} MB (target < 1500 MB)")


if __name__ == "__main__":
    main()
