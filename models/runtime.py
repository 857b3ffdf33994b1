"""The on-robot runtime: an ONNX bundle run by ONNX Runtime, with numpy and OpenCV only (no torch, no pybullet).

``Runtime(bundle)`` opens a folder written by ``microfarm export``: it reads ``manifest.json``, checks the bundle
format and opset, the sha256 of every model file and that each file's own contract (``metadata_props``) equals
the manifest's, and refuses a mismatch with a ``BundleError`` that says what to do. Execution providers are
chosen in the order TensorRT -> CUDA -> CPU among those installed (or as asked), and every session is warmed up.

Typed calls (float32 numpy arrays, batch first):

- ``encode(images [N,C,S,S] in 0..1) -> codes [N,code]``; ``encode_rgb(rgb uint8 (N,H,W,3) or (H,W,3))`` does the
  encoder's preprocessing (resize INTER_AREA, gray as cv2.COLOR_RGB2GRAY, / 255) first;
- ``forward(motor [N,D]) -> codes [N,code]``; ``inverse(codes [N,code]) -> motor [N,D]`` (normalised, not clipped);
- ``guide(images [K,3,H,W] RGB 0..1, masks [K,1,H,W] 0..1) -> [1,G]`` (mean over the K shots);
- ``segment(query [N,3,H,W] RGB 0..1, guide [1,G]) -> logits [N,2,H,W]`` (channel 1 = foreground);
- ``crf(probs [N,2,H,W], image [N,3,H,W] 0..255) -> refined probs [N,2,H,W]``.

``models.onnx_segmenter.OnnxSegmenter`` is the few-shot segmenter over these calls.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["BundleError", "Runtime", "verify_bundle", "select_providers", "BUNDLE_FORMAT",
           "CONTRACT_KEY", "MODEL_NAMES", "PROVIDER_ORDER", "softmax_fg"]

BUNDLE_FORMAT = "1"
CONTRACT_KEY = "microfarm.contract"
SUPPORTED_OPSETS = range(13, 22)
MODEL_NAMES = ("encoder", "forward", "inverse", "guide", "segment", "crf")
PROVIDER_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
PROVIDER_ALIASES = {"tensorrt": "TensorrtExecutionProvider", "trt": "TensorrtExecutionProvider",
                    "cuda": "CUDAExecutionProvider", "cpu": "CPUExecutionProvider"}
PRECISIONS = ("fp32", "fp16", "int8")
# ONNX Runtime graph transformers left out per model: the NCHWc layout pads the CRF's one-channel Gaussian Conv
# to a block of 8-16 output channels and reorders them back (crf.onnx ~8-10% slower on CPU with it)
DISABLED_OPTIMIZERS = {"crf": ["NchwcTransformer"]}
# intra-op threads a model's CPU session uses at most, whatever ``threads`` asks: the CRF's ScatterElements splat
# and its Resizes run on one thread anyway, and a second thread only adds wake-ups between its small nodes
# (256x256 on 2 cores: crf.onnx 0.83x torch's speed on 2 threads, 1.02x on 1; bench/onnx.py --crf-threads)
MAX_MODEL_THREADS = {"crf": 1}


class BundleError(RuntimeError):
    """A bundle that cannot be used (missing, tampered, wrong version, model absent); the message says why."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verify_bundle(bundle: str | Path) -> dict[str, Any]:
    """Read and check ``bundle/manifest.json`` and every file it lists; returns the manifest or raises BundleError."""
    folder = Path(bundle)
    mpath = folder / "manifest.json"
    if not mpath.is_file():
        raise BundleError(f"{str(folder)!r} is not an ONNX bundle (no manifest.json); make one with "
                          "`microfarm export --out DIR`")
    try:
        manifest = json.loads(mpath.read_text())
    except (OSError, ValueError) as e:
        raise BundleError(f"{str(mpath)!r} is not readable JSON ({e}); re-export the bundle") from None
    fmt = str(manifest.get("format_version", ""))
    if fmt != BUNDLE_FORMAT:
        raise BundleError(f"bundle format {fmt!r} is not supported by this runtime (expects {BUNDLE_FORMAT!r}); "
                          "re-export the bundle with this version of microfarm")
    models = manifest.get("models")
    if not isinstance(models, dict) or not models:
        raise BundleError(f"{str(mpath)!r} lists no models; re-export the bundle")
    for name, entry in models.items():
        opset = int(entry.get("opset", 0))
        if opset not in SUPPORTED_OPSETS:
            raise BundleError(f"{name}: opset {opset} is outside what this runtime supports "
                              f"({SUPPORTED_OPSETS.start}..{SUPPORTED_OPSETS.stop - 1}); re-export with opset 18")
        for variant, e in (("fp32", entry), *sorted((entry.get("variants") or {}).items())):
            f = folder / e["file"]
            if not f.is_file():
                raise BundleError(f"{name} ({variant}): file {e['file']!r} is missing from {str(folder)!r}; "
                                  "copy the whole bundle folder")
            if _sha256(f) != e["sha256"]:
                raise BundleError(f"{name} ({variant}): {e['file']!r} does not match the sha256 in manifest.json "
                                  "(modified or corrupted); copy the bundle again or re-export it")
    return manifest


def select_providers(requested: Sequence[str] | str | None = None) -> list[str]:
    """Providers to use: ``None``/"auto" = TensorRT -> CUDA -> CPU among those installed; else the named ones
    (aliases tensorrt/trt, cuda, cpu), in that order, each of which must be installed; CPU is always appended."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if requested is None or requested == "auto" or requested == ["auto"]:
        return [p for p in PROVIDER_ORDER if p in available]
    names = [requested] if isinstance(requested, str) else list(requested)
    out = []
    for n in names:
        full = PROVIDER_ALIASES.get(n.lower(), n)
        if full not in available:
            raise BundleError(f"execution provider {n!r} is not available here (installed: {', '.join(available)}); "
                              "install onnxruntime-gpu (with CUDA/TensorRT) or use --providers cpu")
        out.append(full)
    if "CPUExecutionProvider" not in out:
        out.append("CPUExecutionProvider")
    return out


def softmax_fg(logits: np.ndarray) -> np.ndarray:
    """Two-class logits [N,2,H,W] -> softmax probabilities [N,2,H,W] float32."""
    d = np.clip(logits[:, 0:1] - logits[:, 1:2], -80.0, 80.0)
    fg = 1.0 / (1.0 + np.exp(d))
    return np.concatenate([1.0 - fg, fg], 1).astype(np.float32)


class Runtime:
    """An opened, verified bundle; see the module docstring for the calls.

    providers: None/"auto" or a list (see ``select_providers``); precision: "fp32", "fp16" or "int8" (a model
    without that variant in the bundle runs in fp32); warmup: run each model once on a small input;
    threads: ONNX Runtime intra-op threads (0 = its default); trt_cache: folder for TensorRT engines;
    spin: let idle ONNX Runtime threads spin (lower latency on a dedicated CPU, steals it from others);
    model_threads: intra-op threads per model name, over ``threads`` and the caps of ``MAX_MODEL_THREADS``
    (default: those caps; ``{}`` lifts them).
    """

    def __init__(self, bundle: str | Path, providers: Sequence[str] | str | None = None, precision: str = "fp32",
                 warmup: bool = True, threads: int = 0, trt_cache: str | Path | None = None,
                 spin: bool = False, model_threads: dict[str, int] | None = None) -> None:
        import onnxruntime as ort

        if precision not in PRECISIONS:
            raise BundleError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
        self.folder = Path(bundle)
        self.manifest = verify_bundle(self.folder)
        self.precision = precision
        self.providers = select_providers(providers)
        caps = dict(MAX_MODEL_THREADS if model_threads is None else model_threads)
        self.threads = {name: self._threads(threads, caps.get(name)) for name in MODEL_NAMES}

        def options(n_threads: int) -> Any:
            so = ort.SessionOptions()
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.log_severity_level = 3
            if n_threads:
                so.intra_op_num_threads = n_threads
            if not spin:  # idle worker threads sleep instead of spinning: kinder to a shared, small robot CPU
                so.add_session_config_entry("session.intra_op.allow_spinning", "0")
            return so

        prov: list[Any] = []
        for p in self.providers:
            if p == "TensorrtExecutionProvider":
                cache = Path(trt_cache) if trt_cache else Path.home() / ".cache" / "microfarm" / "trt"
                cache.mkdir(parents=True, exist_ok=True)
                prov.append((p, {"trt_fp16_enable": precision == "fp16", "trt_engine_cache_enable": True,
                                 "trt_engine_cache_path": str(cache)}))
            else:
                prov.append(p)
        self.sessions: dict[str, Any] = {}
        self.files: dict[str, str] = {}
        for name, entry in self.manifest["models"].items():
            variant = (entry.get("variants") or {}).get(precision) if precision != "fp32" else None
            e = variant or entry
            sess = ort.InferenceSession(str(self.folder / e["file"]), sess_options=options(self.threads.get(name, 0)),
                                        providers=prov,
                                        disabled_optimizers=DISABLED_OPTIMIZERS.get(name, []))
            self._check_contract(name, entry, sess)
            self.sessions[name] = sess
            self.files[name] = e["file"]
        if warmup:
            self.warmup()

    @staticmethod
    def _threads(threads: int, cap: int | None) -> int:
        """The intra-op threads of one session: ``threads`` (0 = ORT's default, all cores) capped at ``cap``."""
        if cap is None or cap <= 0:
            return int(threads)
        return min(int(threads), cap) if threads else cap

    # -- checks ------------------------------------------------------------------------------------------
    @staticmethod
    def _check_contract(name: str, entry: dict[str, Any], sess: Any) -> None:
        meta = sess.get_modelmeta().custom_metadata_map
        raw = meta.get(CONTRACT_KEY)
        if raw is None:
            raise BundleError(f"{name}: {entry['file']!r} carries no {CONTRACT_KEY} metadata; re-export the bundle "
                              "with `microfarm export`")
        contract = json.loads(raw)
        fmt = str(contract.get("versions", {}).get("bundle_format", ""))
        if fmt != BUNDLE_FORMAT:
            raise BundleError(f"{name}: model made for bundle format {fmt!r}, this runtime reads {BUNDLE_FORMAT!r}; "
                              "re-export the bundle")
        names = [i.name for i in sess.get_inputs()]
        if [i["name"] for i in contract["inputs"]] != names or contract["inputs"] != entry["inputs"]:
            raise BundleError(f"{name}: the model's inputs {names} do not match manifest.json's contract; "
                              "the bundle is inconsistent, re-export it")

    def has(self, name: str) -> bool:
        return name in self.sessions

    def entry(self, name: str) -> dict[str, Any]:
        return self.manifest["models"][name]

    def _run(self, name: str, feeds: dict[str, np.ndarray]) -> np.ndarray:
        if name not in self.sessions:
            how = ("export with --explore-run DIR" if name in ("encoder", "forward", "inverse")
                   else "export with --segmenter WEIGHTS")
            raise BundleError(f"the bundle {str(self.folder)!r} has no {name} model "
                              f"(has: {', '.join(self.sessions)}); {how}")
        feeds = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in feeds.items()}
        return self.sessions[name].run(None, feeds)[0]

    def warmup(self) -> dict[str, float]:
        """Run each model once on a small input; returns seconds per model (the first run builds kernels)."""
        times = {}
        for name, entry in self.manifest["models"].items():
            feeds = {}
            for inp in entry["inputs"]:
                shape = [d if isinstance(d, int) else (2 if inp["name"] in ("probs",) and i == 1 else 64)
                         for i, d in enumerate(inp["shape"])]
                if isinstance(inp["shape"][0], str):
                    shape[0] = 1
                feeds[inp["name"]] = np.random.default_rng(0).random(shape, dtype=np.float32)
            t0 = time.perf_counter()
            self.sessions[name].run(None, feeds)
            times[name] = time.perf_counter() - t0
        return times

    # -- typed calls -------------------------------------------------------------------------------------
    def encode(self, images: np.ndarray) -> np.ndarray:
        """images [N,C,S,S] float32 0..1 (preprocessed) -> codes [N,code]."""
        return self._run("encoder", {"image": images})

    def encode_rgb(self, rgb: np.ndarray) -> np.ndarray:
        """RGB uint8 (N,H,W,3) or (H,W,3) -> codes [N,code], with the encoder's preprocessing from the manifest."""
        import cv2

        pre = self.entry("encoder")["preprocess"]
        a = np.asarray(rgb)
        if a.ndim == 3:
            a = a[None]
        s = int(pre["size"])
        if a.shape[1:3] != (s, s):
            a = np.stack([cv2.resize(im, (s, s), interpolation=cv2.INTER_AREA) for im in a])
        if pre["color"] == "gray":
            x = np.stack([cv2.cvtColor(im, cv2.COLOR_RGB2GRAY) for im in a])[:, None]
        else:
            x = a.transpose(0, 3, 1, 2)
        return self.encode(x.astype(np.float32) * np.float32(pre["scale"]))

    def forward(self, motor: np.ndarray) -> np.ndarray:
        """motor [N,D] normalised -> predicted codes [N,code]."""
        return self._run("forward", {"motor": np.atleast_2d(motor)})

    def inverse(self, codes: np.ndarray) -> np.ndarray:
        """codes [N,code] -> motor [N,D] (normalised; clip to the robot's limits before sending)."""
        return self._run("inverse", {"code": np.atleast_2d(codes)})

    def guide(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """images [K,3,H,W] RGB 0..1, masks [K,1,H,W] 0..1 -> guide [1,G]."""
        return self._run("guide", {"images": images, "masks": masks})

    def segment(self, query: np.ndarray, guide: np.ndarray) -> np.ndarray:
        """query [N,3,H,W] RGB 0..1, guide [1,G] -> logits [N,2,H,W] (1 = foreground)."""
        return self._run("segment", {"query": query, "guide": guide})

    def crf(self, probs: np.ndarray, image: np.ndarray) -> np.ndarray:
        """probs [N,2,H,W], image [N,3,H,W] RGB 0..255 -> refined probs [N,2,H,W]."""
        return self._run("crf", {"probs": probs, "image": image})
