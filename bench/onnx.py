"""ONNX Runtime vs torch eager, side by side in one run: p50/p95 latency of every model of a bundle, the whole
segmentation step (guide reused: segment + softmax + mean-field CRF) in frames per second, the mean-field CRF
from ONNX against pydensecrf (dense CRF), and model sizes for fp32 / fp16 / int8. For the guided network
(``guide``, ``segment``) also torch as ``microfarm segment`` runs it (``models.fold_bn.inference_copy``: batch
norm folded, channels-last), the "torch fast" columns.

    python bench/onnx.py                       # builds a bundle of the real architectures (untrained) in a temp dir
    python bench/onnx.py --bundle B            # an exported bundle (torch side from the weights it names)
    python bench/onnx.py --providers cuda --device cuda     # on an NVIDIA machine (bench/gpu.sh)

Untrained weights time the same as trained ones (same graphs); the numbers are latencies, not accuracies.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# this file is named onnx.py: keep its folder off sys.path so that `import onnx` finds the real package
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]
sys.path.insert(0, str(_HERE.parent))


def timeit(fn, iters: int, warmup: int = 3, sync=None) -> tuple[float, float]:
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        ts.append(1e3 * (time.perf_counter() - t0))
    return float(np.percentile(ts, 50)), float(np.percentile(ts, 95))


def build_bundle(folder: Path, imgsz: int, variants: bool, calib: int) -> Path:
    from robot.export_cli import ExportConfig, export_bundle, write_demo_sources

    run, seg = write_demo_sources(folder / "src", tiny=False)
    return export_bundle(ExportConfig(out=folder / "bundle", explore_run=run, segmenter=seg, imgsz=imgsz,
                                      fp16=variants, int8=variants, calib=calib, eval_frames=8),
                         log=lambda m: print("  export:", m, flush=True))


def torch_models(man: dict, device: str):
    """The torch modules behind a bundle (from the weights its manifest names), or {} where they are gone."""
    import torch

    from models.autoencoder import AutoencoderConfig, ConvAutoencoder
    from models.crf import MeanFieldCRF
    from models.guided_net import load_guided_net
    from models.mlp import MLP, MLPConfig
    from models.weights import load_into, read_metadata

    mods: dict = {}
    run = Path(man.get("training", {}).get("run", "/nonexistent"))
    if (run / "weights").is_dir():
        w = run / "weights"
        ae = ConvAutoencoder(AutoencoderConfig.from_dict(read_metadata(w / "autoencoder.safetensors")["config"]))
        load_into(ae, w / "autoencoder.safetensors")
        mods["encoder"] = ae.encoder
        for n in ("forward", "inverse"):
            m = MLP(MLPConfig.from_dict(read_metadata(w / f"{n}.safetensors")["config"]))
            load_into(m, w / f"{n}.safetensors")
            mods[n] = m
    segw = Path(man.get("segmenter", {}).get("weights", "/nonexistent"))
    if segw.is_file():
        from models.fold_bn import inference_copy

        net, _ = load_guided_net(segw)
        fast = inference_copy(net.to(device))
        mods["guide_fast"], mods["segment_fast"] = fast.guide, fast.segment
        mods["guide"] = net.guide
        mods["segment"] = net.segment
        mods["_net"] = net
    if "crf" in man:
        mods["crf"] = MeanFieldCRF(**man["crf"])
    for k, m in mods.items():
        if isinstance(m, torch.nn.Module):
            mods[k] = m.to(device).eval()
    if "_net" in mods:
        mods["_net"].to(device).eval()
        mods["guide"], mods["segment"] = mods["_net"].guide, mods["_net"].segment
    return mods


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--imgsz", type=int, default=256)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--threads", type=int, default=2, help="torch and ORT intra-op threads (CPU)")
    ap.add_argument("--providers", default="cpu", help="auto, cpu, cuda, tensorrt (comma separated)")
    ap.add_argument("--device", default="cpu", help="torch device for the eager column")
    ap.add_argument("--no-variants", action="store_true", help="skip fp16/int8 when building the bundle")
    ap.add_argument("--calib", type=int, default=16)
    ap.add_argument("--precision", default="fp32", help="bundle variant the ORT column runs")
    ap.add_argument("--spin", action="store_true", help="let idle ORT threads spin (as torch's OpenMP threads do; "
                    "the runtime's default is off)")
    ap.add_argument("--crf-threads", type=int, default=None,
                    help="intra-op threads of crf.onnx (default: the runtime's cap, MAX_MODEL_THREADS; 0: no cap, "
                    "--threads); with --threads > 1 the uncapped CRF is timed beside it")
    args = ap.parse_args()

    import torch

    from models.runtime import Runtime, softmax_fg

    torch.set_num_threads(args.threads)
    tmp = None
    if args.bundle is None:
        tmp = tempfile.TemporaryDirectory(prefix="bench_onnx_")
        print(f"building a bundle (real architectures, untrained) at {args.imgsz}x{args.imgsz} ...", flush=True)
        args.bundle = build_bundle(Path(tmp.name), args.imgsz, not args.no_variants, args.calib)
    providers = None if args.providers == "auto" else args.providers.split(",")
    model_threads = None if args.crf_threads is None else {"crf": args.crf_threads}
    rt = Runtime(args.bundle, providers=providers, precision=args.precision, threads=args.threads, spin=args.spin,
                 model_threads=model_threads)
    man = rt.manifest
    dev = torch.device(args.device)
    mods = torch_models(man, args.device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    S = args.imgsz
    rng = np.random.default_rng(0)
    enc_pre = man["models"].get("encoder", {}).get("preprocess", {"size": 64, "color": "gray"})
    es, ec = enc_pre["size"], 1 if enc_pre["color"] == "gray" else 3
    code = man["models"]["inverse"]["inputs"][0]["shape"][1] if "inverse" in man["models"] else 32
    G = man["models"]["segment"]["inputs"][1]["shape"][1] if "segment" in man["models"] else 512
    q = rng.random((1, 3, S, S), dtype=np.float32)
    mask = np.zeros((1, 1, S, S), np.float32)
    mask[..., S // 4: 3 * S // 4, S // 4: 3 * S // 4] = 1
    probs = softmax_fg(rng.normal(size=(1, 2, S, S)).astype(np.float32))
    guide = rt.guide(q, mask) if rt.has("guide") else rng.normal(size=(1, G)).astype(np.float32)
    inputs = {"encoder": (rng.random((1, ec, es, es), dtype=np.float32),), "forward": (rng.random((1, 2),
              dtype=np.float32),), "inverse": (rng.normal(size=(1, code)).astype(np.float32),),
              "guide": (q, mask), "segment": (q, guide), "crf": (probs, q * 255)}
    call = {"encoder": rt.encode, "forward": rt.forward, "inverse": rt.inverse, "guide": rt.guide,
            "segment": rt.segment, "crf": rt.crf}
    print(f"\nproviders={','.join(rt.providers)} precision={args.precision} torch={args.device} "
          f"threads={args.threads} (crf.onnx {rt.threads['crf'] or 'default'}) spin={args.spin} imgsz={S} "
          f"iters={args.iters} batch=1")
    print(f"{'model':>10} {'ORT p50':>9} {'ORT p95':>9} {'torch p50':>10} {'torch p95':>10} {'torch/ORT':>10} "
          f"{'torch fast p50':>15} {'fast/ORT':>9}  (ms)")
    results = {}
    for name in ("encoder", "forward", "inverse", "guide", "segment", "crf"):
        if not rt.has(name):
            continue
        a = inputs[name]
        o50, o95 = timeit(lambda name=name, a=a: call[name](*a), args.iters)
        t50 = t95 = float("nan")
        if name in mods:
            ta = tuple(torch.from_numpy(x).to(dev) for x in a)
            with torch.inference_mode():
                t50, t95 = timeit(lambda name=name, ta=ta: mods[name](*ta), args.iters, sync=sync)
        results[name] = {"ort_p50": o50, "ort_p95": o95, "torch_p50": t50, "torch_p95": t95}
        fast = ""
        if name + "_fast" in mods:  # the folded channels-last copy, on channels-last inputs
            tf = tuple(torch.from_numpy(x).to(dev) for x in a)
            tf = tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t for t in tf)
            with torch.inference_mode():
                f50, _ = timeit(lambda name=name, tf=tf: mods[name + "_fast"](*tf), args.iters, sync=sync)
            results[name]["torch_fast_p50"] = f50
            fast = f" {f50:15.3f} {f50 / o50:9.2f}"
        print(f"{name:>10} {o50:9.3f} {o95:9.3f} {t50:10.3f} {t95:10.3f} {t50 / o50:10.2f}{fast}")
    if rt.has("crf") and args.threads > 1 and rt.threads["crf"] != args.threads:
        free = Runtime(args.bundle, providers=providers, precision=args.precision, threads=args.threads,
                       spin=args.spin, model_threads={})
        o50, o95 = timeit(lambda: free.crf(*inputs["crf"]), args.iters)
        t50, t95 = (results["crf"][k] for k in ("torch_p50", "torch_p95"))
        print(f"{'crf (' + str(args.threads) + ' thr)':>10} {o50:9.3f} {o95:9.3f} {t50:10.3f} {t95:10.3f} "
              f"{t50 / o50:10.2f}   <- crf.onnx on {args.threads} threads instead of {rt.threads['crf']}")

    if rt.has("segment") and rt.has("crf"):
        def ort_step() -> None:
            rt.crf(softmax_fg(rt.segment(q, guide)), q * 255)

        o50, o95 = timeit(ort_step, args.iters)
        line = f"\nsegmentation step {S}x{S} (guide reused; segment + softmax + CRF): ORT p50 {o50:.2f} ms " \
               f"= {1e3 / o50:.1f} fps"
        if "segment" in mods:
            tq, tg, ti = (torch.from_numpy(x).to(dev) for x in (q, guide, q * 255))

            def torch_step() -> None:
                mods["crf"](torch.softmax(mods["segment"](tq, tg), 1), ti)

            with torch.inference_mode():
                t50, _ = timeit(torch_step, args.iters, sync=sync)
            line += f"; torch p50 {t50:.2f} ms = {1e3 / t50:.1f} fps; torch/ORT {t50 / o50:.2f}"
            tqf = tq.contiguous(memory_format=torch.channels_last)

            def fast_step() -> None:
                mods["crf"](torch.softmax(mods["segment_fast"](tqf, tg), 1).contiguous(), ti)

            with torch.inference_mode():
                f50, _ = timeit(fast_step, args.iters, sync=sync)
            line += f"; torch fast p50 {f50:.2f} ms, fast/ORT {f50 / o50:.2f}"
        print(line)

    if rt.has("crf"):
        try:
            from vision.densecrf import dense_crf

            img = (q[0].transpose(1, 2, 0) * 255).astype(np.uint8)
            d50, _ = timeit(lambda: dense_crf(probs[0], img), max(5, args.iters // 3), warmup=1)
            o50 = results["crf"]["ort_p50"]
            agree = ((dense_crf(probs[0], img)[1] > 0.5) == (rt.crf(probs, q * 255)[0, 1] > 0.5)).mean()
            print(f"CRF {S}x{S}, 5 iterations: ONNX mean-field p50 {o50:.2f} ms vs pydensecrf {d50:.2f} ms "
                  f"(pydensecrf/ONNX {d50 / o50:.2f}); mask agreement {100 * agree:.1f}% on random unaries")
        except ImportError:
            print("pydensecrf not installed: dense CRF comparison skipped")

    print(f"\n{'model':>10} {'fp32 KB':>10} {'fp16 KB':>10} {'int8 KB':>10}")
    for name, e in man["models"].items():
        sizes = [Path(args.bundle, e["file"]).stat().st_size / 1024]
        for kind in ("fp16", "int8"):
            v = (e.get("variants") or {}).get(kind)
            sizes.append(Path(args.bundle, v["file"]).stat().st_size / 1024 if v else float("nan"))
        print(f"{name:>10} " + " ".join(f"{s:10.1f}" for s in sizes))
    if "quantization" in man:
        print("\ntask metrics (export-time check):", json.dumps(man["quantization"]))
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
