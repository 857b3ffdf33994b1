"""Segmentation speed and CRF gain, side by side in one run.

    python bench/segment.py [--weights PATH] [--compare PATH] [--data data/seg] [--episodes 200] [--frames 100]
                            [--threads 2]

0. With ``--compare``: the predictor's time per 256x256 frame for ``--weights`` and each ``--compare`` file, side
   by side (e.g. the compact and the EfficientNet-Lite0 backbones).

1. Per-frame latency of ``FewShotSegmenter.predict`` at 256x256 (no CRF, the default colour prior) with the
   guide reused (computed once by ``set_support``) versus recomputed for every frame (``set_support`` +
   ``predict``; with ``--fusion fit``, the default, this includes fitting the cue weights), 1 and 5 shots; and
   the guide reused without the colour prior (``colour_prior=0``), with the other ``--fusion``, and with the
   network run eagerly (``TorchBackend(fast=False)``: batch norm not folded, NCHW memory) beside the default
   inference copy (``models.fold_bn``), with their ratio, and the inference copy with its "SAME" convolutions
   kept as ``F.pad`` + convolution (``inference_copy(symmetric_pad=False)``), with its ratio to the default.
   Target: <= 30 ms per frame with the guide reused. Beside it, the guide reused with ``--scales 1 --scales 2``
   (the network at 256 and 512, ``models.scales``; no target). Then the default pipeline and the network alone on
   a 1920x1080 frame (a camera's; the network still at 256 px: the per-pixel cues are what grow; no target).
   Also the CRF gate's one-off check per support set (``models.crf_gate``: the pipeline with and without the
   mean-field CRF on each support image).
2. Dense CRF (pydensecrf) versus mean-field CRF (``models.crf``) seconds per frame at 500x375 on a real photo
   (pydensecrf's ``im1.png`` resized, unaries from its ``anno1.png`` as in pydensecrf's example), the
   mean-field CRF with 1 torch thread and with ``--threads``; pydensecrf is single-threaded. Target: mean-field
   >= 10x faster than dense.
3. With ``--data``: the mIoU gain of each CRF over the network alone, and over the network with the colour
   prior (the default pipeline), on ``--episodes`` 1-shot episodes of the weights' held-out fold
   (``vision.evaluate``). Target: mean-field gain within 0.5 point of the dense gain.

Rounds are interleaved so that machine noise hits both sides alike; the minimum over rounds is reported
(the machine is shared). Nothing here is a test: it prints figures.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from models.fold_bn import inference_copy  # noqa: E402
from models.guided_net import GuidedNet, load_guided_net  # noqa: E402
from vision.densecrf import CRFParams, dense_crf  # noqa: E402
from vision.predictor import FewShotSegmenter  # noqa: E402

EXAMPLES = ROOT.parent / "shared" / "data" / "densecrf_examples"
if not EXAMPLES.is_dir():
    EXAMPLES = Path("/work/shared/data/densecrf_examples")
DEFAULT_WEIGHTS = ROOT / "models" / "weights" / "segmenter.safetensors"


def _rgb(path: Path, size: tuple[int, int] | None = None, nearest: bool = False) -> np.ndarray:
    im = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if im is None:
        raise SystemExit(f"cannot read {path}")
    im = cv2.cvtColor(im, cv2.COLOR_BGR2RGB)
    if size is not None:
        im = cv2.resize(im, size, interpolation=cv2.INTER_NEAREST if nearest else cv2.INTER_AREA)
    return im


def _min_time(fn, rounds: int, clock=time.perf_counter) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = clock()
        fn()
        best = min(best, clock() - t)
    return best


def bench_predict(model: GuidedNet, frames: int, rounds: int) -> None:
    img = _rgb(EXAMPLES / "im1.png", (256, 256))
    anno = _rgb(EXAMPLES / "anno1.png", (256, 256), nearest=True)
    mask = anno.any(2)
    query = _rgb(EXAMPLES / "im2.png", (256, 256))
    seg = FewShotSegmenter(model, crf="none", imgsz=256)
    alone = FewShotSegmenter(model, crf="none", imgsz=256, colour_prior=0.0)
    multi = FewShotSegmenter(model, crf="none", imgsz=256, scales=(1, 2))
    other = "blend" if seg.fusion == "fit" else "fit"
    alt = FewShotSegmenter(model, crf="none", imgsz=256, fusion=other)
    eager = FewShotSegmenter(model, crf="none", imgsz=256)
    eager.backend.fast = False  # the model itself, not its folded channels-last copy
    padded = FewShotSegmenter(model, crf="none", imgsz=256)
    padded_copy = inference_copy(padded.model, symmetric_pad=False)  # the copy with F.pad before its convolutions
    padded.backend._net = lambda: padded_copy  # type: ignore[method-assign]
    print(f"\n1) predict at 256x256 without the CRF, colour prior {seg.colour_prior}, --fusion {seg.fusion} (the "
          f"defaults), torch threads={torch.get_num_threads()} (ms per frame, best of {rounds} rounds of {frames} "
          "frames)")
    print(f"{'shots':>5} {'guide reused':>13} {'recomputed':>11} {'ratio':>6} {'reused, network alone':>22} "
          f"{'reused, --scales 1 2':>21} {'reused, --fusion ' + other:>22} {'reused, eager net':>18} "
          f"{'eager/fast':>10} {'reused, F.pad copy':>19} {'F.pad/fast':>10}")
    for k in (1, 5):
        sup_i, sup_m = [img] * k, [mask] * k
        seg.set_support(sup_i, sup_m)
        alone.set_support(sup_i, sup_m)
        multi.set_support(sup_i, sup_m)
        alt.set_support(sup_i, sup_m)
        eager.set_support(sup_i, sup_m)
        padded.set_support(sup_i, sup_m)
        for _ in range(3):
            eager.predict(query)
            padded.predict(query)
            seg.predict(query)
            alone.predict(query)
            multi.predict(query)
            alt.predict(query)
        reused, recomputed, net, scales, other_t, eager_t, pad_t = (float("inf"),) * 7
        for _ in range(rounds):  # interleaved
            t = time.perf_counter()
            for _ in range(frames):
                seg.predict(query)
            reused = min(reused, (time.perf_counter() - t) / frames)
            t = time.perf_counter()
            for _ in range(frames):
                seg.set_support(sup_i, sup_m)
                seg.predict(query)
            recomputed = min(recomputed, (time.perf_counter() - t) / frames)
            t = time.perf_counter()
            for _ in range(frames):
                alone.predict(query)
            net = min(net, (time.perf_counter() - t) / frames)
            t = time.perf_counter()
            for _ in range(frames):
                multi.predict(query)
            scales = min(scales, (time.perf_counter() - t) / frames)
            t = time.perf_counter()
            for _ in range(frames):
                alt.predict(query)
            other_t = min(other_t, (time.perf_counter() - t) / frames)
            t = time.perf_counter()
            for _ in range(frames):
                eager.predict(query)
            eager_t = min(eager_t, (time.perf_counter() - t) / frames)
            t = time.perf_counter()
            for _ in range(frames):
                padded.predict(query)
            pad_t = min(pad_t, (time.perf_counter() - t) / frames)
        print(f"{k:>5} {1000 * reused:13.1f} {1000 * recomputed:11.1f} {recomputed / reused:6.2f} {1000 * net:22.1f} "
              f"{1000 * scales:21.1f} {1000 * other_t:22.1f} {1000 * eager_t:18.1f} {eager_t / reused:10.2f} "
              f"{1000 * pad_t:19.1f} {pad_t / reused:10.2f}")
        if k == 1:
            print(f"      target <= 30 ms per frame with the guide reused: {'met' if reused <= 0.030 else 'NOT met'}")
    bench_camera_frame(model, rounds)
    gated = FewShotSegmenter(model, crf="meanfield", imgsz=256)
    checks = []
    for k in (1, 5):
        gated.set_support([img] * k, [mask] * k)

        def check() -> None:
            gated.gate.last = None  # forget the cached decision: run the check again
            _ = gated.crf_on

        check()
        checks.append(f"{k} shot{'s' * (k > 1)} {1000 * _min_time(check, rounds):.1f} ms")
    print(f"      CRF gate's check, once per support set (mean-field, 256x256 shots): {', '.join(checks)}")


def bench_camera_frame(model: GuidedNet, rounds: int, size: tuple[int, int] = (1920, 1080)) -> None:
    """``predict`` on a camera-sized frame (the examples resized to ``size`` (W, H)), guide reused, no CRF: the
    default pipeline and the network alone, 1 and 5 shots. The network's input stays 256 px: what grows with the
    frame is the per-pixel work (colour histogram, excess green, the fitted cues, resizes)."""
    img = _rgb(EXAMPLES / "im1.png", size)
    mask = _rgb(EXAMPLES / "anno1.png", size, nearest=True).any(2)
    query = _rgb(EXAMPLES / "im2.png", size)
    seg = FewShotSegmenter(model, crf="none", imgsz=256)
    alone = FewShotSegmenter(model, crf="none", imgsz=256, colour_prior=0.0)
    cells = []
    for k in (1, 5):
        seg.set_support([img] * k, [mask] * k)
        alone.set_support([img] * k, [mask] * k)
        seg.predict(query)  # warm-up: the first frame after set_support fits the cues
        alone.predict(query)
        t_seg, t_net = float("inf"), float("inf")
        for _ in range(rounds):  # interleaved
            t_seg = min(t_seg, _min_time(lambda: seg.predict(query), 1))
            t_net = min(t_net, _min_time(lambda: alone.predict(query), 1))
        cells.append(f"{k} shot{'s' * (k > 1)} {1000 * t_seg:.1f} ms (network alone {1000 * t_net:.1f})")
    print(f"      predict at {size[0]}x{size[1]}, guide reused, no CRF (best of {rounds}): {', '.join(cells)}")


def bench_backbones(models: dict[str, GuidedNet], frames: int, rounds: int) -> None:
    """Per-frame predict at 256x256 (guide reused, the default colour prior, no CRF) for each model, interleaved."""
    img = _rgb(EXAMPLES / "im1.png", (256, 256))
    mask = _rgb(EXAMPLES / "anno1.png", (256, 256), nearest=True).any(2)
    query = _rgb(EXAMPLES / "im2.png", (256, 256))
    segs = {n: FewShotSegmenter(m, crf="none", imgsz=256) for n, m in models.items()}
    for seg in segs.values():
        seg.set_support([img], [mask])
        for _ in range(3):
            seg.predict(query)
    best = dict.fromkeys(segs, float("inf"))
    for _ in range(rounds):
        for n, seg in segs.items():
            t = time.perf_counter()
            for _ in range(frames):
                seg.predict(query)
            best[n] = min(best[n], (time.perf_counter() - t) / frames)
    first = next(iter(best.values()))
    print(f"\n0) backbones side by side: predict at 256x256, 1 shot, guide reused, colour prior, no CRF "
          f"(ms per frame, best of {rounds} rounds of {frames}; torch threads={torch.get_num_threads()})")
    for n, v in best.items():
        met = "met" if v <= 0.030 else "NOT met"
        print(f"   {n:<40} {1000 * v:7.1f} ms  {v / first:5.2f}x  target <= 30 ms: {met}")


def _example_unaries(size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """im1 resized to ``size`` (W,H) and the unary probabilities of pydensecrf's example from anno1."""
    from pydensecrf.utils import unary_from_labels

    img = _rgb(EXAMPLES / "im1.png", size)
    a = _rgb(EXAMPLES / "anno1.png", size, nearest=True).astype(np.uint32)
    lbl = a[..., 0] + (a[..., 1] << 8) + (a[..., 2] << 16)
    colors, labels = np.unique(lbl, return_inverse=True)
    labels = labels.reshape(lbl.shape)
    has_unk = bool(colors[0] == 0)
    n = len(colors) - int(has_unk)
    u = unary_from_labels(labels, n, gt_prob=0.7, zero_unsure=has_unk)
    p = np.exp(-u).reshape(n, *lbl.shape)
    return img, (p / p.sum(0, keepdims=True)).astype(np.float32)


def bench_crf(rounds: int, threads: int) -> dict[int, dict[str, float]]:
    """Seconds per frame at 500x375 of the dense CRF and of the mean-field CRF in both modes (grid, the
    default, and the ConvCRF window), interleaved round by round."""
    import dataclasses

    img, p = _example_unaries((500, 375))
    params = CRFParams()
    mfs = {m: dataclasses.replace(params, bilateral=m).meanfield().eval() for m in ("grid", "window")}
    pt = torch.from_numpy(p)[None]
    it = torch.from_numpy(img).permute(2, 0, 1)[None].float()
    fns = {"dense": lambda: dense_crf(p, img, params), **{m: (lambda c=c: c(pt, it)) for m, c in mfs.items()}}
    with torch.inference_mode():
        for _ in range(2):
            for fn in fns.values():
                fn()
        res: dict[int, dict[str, float]] = {}
        for nt in sorted({1, threads}):
            torch.set_num_threads(nt)
            best = dict.fromkeys(fns, float("inf"))
            for _ in range(rounds):  # interleaved
                for name, fn in fns.items():
                    best[name] = min(best[name], _min_time(fn, 1))
            res[nt] = best
    torch.set_num_threads(threads)
    print(f"\n2) CRF at 500x375 on im1.png ({p.shape[0]} labels, {params.iterations} iterations; "
          f"best of {rounds} interleaved rounds)")
    print(f"{'torch threads':>13} {'dense s/frame':>14} {'mean-field grid':>16} {'window':>8} "
          f"{'dense/grid':>11} {'dense/window':>13}")
    for nt, r in res.items():
        print(f"{nt:>13} {r['dense']:14.4f} {r['grid']:16.4f} {r['window']:8.4f} {r['dense'] / r['grid']:11.1f} "
              f"{r['dense'] / r['window']:13.1f}")
    ratio = max(r["dense"] / r["grid"] for r in res.values())
    print(f"      target mean-field (grid, the default) >= 10x faster than dense: "
          f"{'met' if ratio >= 10 else 'NOT met'} (best ratio {ratio:.1f})")
    return res


def bench_gain(weights: Path, data: Path, episodes: int) -> None:
    from vision.evaluate import EvalConfig, evaluate

    with tempfile.TemporaryDirectory() as tmp:
        cfg = EvalConfig(data=data, weights=weights, out=Path(tmp), shots=[1], episodes=episodes,
                         baselines=False, examples=0, progress=False)
        res = evaluate(cfg, Path(tmp))
    sec = res["seconds_per_frame"]
    for fold, by_k in res["folds"].items():
        r = by_k["1"]
        print(f"\n3) CRF gain on {episodes} 1-shot episodes of held-out fold {fold} ({data})")
        print(f"{'':>38} {'mIoU':>6} {'gain':>6} {'FB-IoU':>7} {'s/frame':>8}")
        for first, pre, label in (("none", "", "network alone"),
                                  ("colour", "colour_", f"network + colour prior {cfg.colour_prior}")):
            base = r[first]["miou"]
            rows = [(first, label), (pre + "dense", "+ dense CRF"), (pre + "meanfield", "+ mean-field CRF")]
            rows += [(m, f"+ {c} CRF, gated") for m, c in ((pre + "dense_gated", "dense"),
                                                           (pre + "meanfield_gated", "mean-field")) if m in r]
            for m, name in rows:
                print(f"{name:>38} {100 * r[m]['miou']:6.2f} {100 * (r[m]['miou'] - base):+6.2f} "
                      f"{100 * r[m]['fb_iou']:7.2f} {sec[m]:8.4f}")
            for suffix, how in (("", "always"), ("_gated", "gated")):
                if pre + "dense" + suffix not in r:
                    continue
                gd, gm = r[pre + "dense" + suffix]["miou"] - base, r[pre + "meanfield" + suffix]["miou"] - base
                print(f"      target mean-field gain within 0.5 point of dense gain ({how}): "
                      f"{'met' if abs(gm - gd) <= 0.005 or gm >= gd else 'NOT met'} "
                      f"(dense {100 * gd:+.2f}, mean-field {100 * gm:+.2f} points)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", type=Path, default=DEFAULT_WEIGHTS)
    ap.add_argument("--data", type=Path, default=None, help="rendered segmentation dataset for the CRF gain")
    ap.add_argument("--episodes", type=int, default=200)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (the machine's cores)")
    ap.add_argument("--compare", type=Path, action="append", default=[],
                    help="other weights to time beside --weights first (repeatable)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.compare:
        named = {str(p): load_guided_net(p)[0] for p in [args.weights, *args.compare]}
        bench_backbones(named, args.frames, args.rounds)
    if args.weights.is_file():
        model, _ = load_guided_net(args.weights)
        print(f"weights: {args.weights}")
    else:
        model = GuidedNet().eval()
        print(f"weights: {args.weights} not found; timing an untrained compact GuidedNet (same cost)")
    bench_predict(model, args.frames, args.rounds)
    bench_crf(max(args.rounds, 5), args.threads)
    if args.data is not None:
        bench_gain(args.weights, args.data, args.episodes)


if __name__ == "__main__":
    main()
