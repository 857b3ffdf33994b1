"""Stuck-at faults (`models.faults`, `microfarm faults`): exact fault counts, stuck values, a faulty copy that loads,
the original bundle untouched, metrics that degrade with the rate, one-line errors.

The bundle here is hand-made with ``onnx.helper`` (no torch export: fast) in the format ``Runtime`` checks, with
models that are right by construction on synthetic frames (``DotFrames``): the encoder reads a white dot's position,
the inverse is the identity, the segmenter marks green pixels. Fault-free they score reach error 0 and mIoU 100.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from microfarm import main as microfarm_main
from models.faults import FAULTS_KEY, fault_count, fault_model, weight_names, write_faulty_bundle
from models.runtime import CONTRACT_KEY, Runtime

ENC, SEG = 16, 32  # encoder input side (gray), segmentation input side (RGB)


def _model(name: str, nodes: list, inputs: list, outputs: list, inits: dict[str, np.ndarray]) -> onnx.ModelProto:
    g = helper.make_graph(nodes, name, inputs, outputs,
                          [numpy_helper.from_array(v.astype(v.dtype), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _vi(name: str, shape: list) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, TensorProto.FLOAT, shape)


def tiny_models() -> dict[str, tuple[onnx.ModelProto, dict]]:
    """encoder: flattened gray image -> (x, y) of its bright pixel; inverse: a 2-8-2 identity; guide: masked colour
    mean (no weights); segment: 1x1 convs, foreground logit = sum relu(G - R), background = sum relu(R - G)."""
    ys, xs = np.mgrid[0:ENC, 0:ENC] / (ENC - 1)
    enc_w = np.stack([xs.ravel(), ys.ravel()], 1).astype(np.float32)  # [256, 2]
    enc = _model("encoder", [helper.make_node("Flatten", ["image"], ["flat"]),
                             helper.make_node("Gemm", ["flat", "W"], ["code"])],
                 [_vi("image", ["batch", 1, ENC, ENC])], [_vi("code", ["batch", 2])], {"W": enc_w})
    w1, w2 = np.tile(np.eye(2), 4).astype(np.float32), (np.tile(np.eye(2), 4).T / 4).astype(np.float32)
    inv = _model("inverse", [helper.make_node("Gemm", ["code", "W1", "b1"], ["h"]),
                             helper.make_node("Gemm", ["h", "W2"], ["motor"])],
                 [_vi("code", ["batch", 2])], [_vi("motor", ["batch", 2])],
                 {"W1": w1, "b1": np.zeros(8, np.float32), "W2": w2})
    guide = _model("guide", [helper.make_node("Mul", ["images", "masks"], ["prod"]),
                             helper.make_node("ReduceMean", ["prod", "axes"], ["g3"], keepdims=0),
                             helper.make_node("Unsqueeze", ["g3", "zero"], ["guide"])],
                   [_vi("images", ["shots", 3, "height", "width"]), _vi("masks", ["shots", 1, "height", "width"])],
                   [_vi("guide", [1, 3])], {"axes": np.array([0, 2, 3], np.int64), "zero": np.array([0], np.int64)})
    c1 = np.zeros((8, 3, 1, 1), np.float32)
    c1[:4, :2, 0, 0] = [-1.0, 1.0]  # relu(G - R)
    c1[4:, :2, 0, 0] = [1.0, -1.0]  # relu(R - G)
    c2 = np.zeros((2, 8, 1, 1), np.float32)
    c2[1, :4], c2[0, 4:] = 1.0, 1.0
    seg = _model("segment", [helper.make_node("Conv", ["query", "C1", "cb"], ["h"]),
                             helper.make_node("Relu", ["h"], ["r"]), helper.make_node("Conv", ["r", "C2"], ["logits"])],
                 [_vi("query", ["batch", 3, "height", "width"]), _vi("guide", [1, 3])],
                 [_vi("logits", ["batch", 2, "height", "width"])], {"C1": c1, "cb": np.zeros(8, np.float32),
                                                                    "C2": c2})
    enc_pre = {"size": ENC, "color": "gray", "scale": 1 / 255}
    return {"encoder": (enc, {"preprocess": enc_pre}), "inverse": (inv, {"preprocess": {}}),
            "guide": (guide, {"preprocess": {"size": SEG}}), "segment": (seg, {"preprocess": {"size": SEG}})}


def write_tiny_bundle(folder: Path) -> Path:
    """The models of ``tiny_models`` as a bundle (files, contracts in ``metadata_props``, ``manifest.json``)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = {}
    for name, (m, extra) in tiny_models().items():
        io = {k: [{"name": v.name, "shape": [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim],
                   "dtype": "float32"} for v in vs]
              for k, vs in (("inputs", m.graph.input), ("outputs", m.graph.output))}
        contract = {**io, **extra, "versions": {"bundle_format": "1"}}
        m.metadata_props.add(key=CONTRACT_KEY, value=json.dumps(contract))
        data = m.SerializeToString()
        (folder / f"{name}.onnx").write_bytes(data)
        entries[name] = {"file": f"{name}.onnx", "opset": 18, **io, **extra,
                         "sha256": hashlib.sha256(data).hexdigest(), "size_bytes": len(data)}
    (folder / "manifest.json").write_text(json.dumps({
        "format_version": "1", "models": entries, "motor": {"arm": "gantry", "low": [0, 0], "high": [1, 1]}}))
    return folder


class DotFrames:
    """A ``FrameSource`` of synthetic frames: views = a white dot on black at the motor position; scenes = red soil
    with green squares (species 1)."""

    def features(self, arm: str, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        pos = np.random.default_rng(seed).integers(0, size, (n, 2))
        imgs = np.zeros((n, size, size, 3), np.uint8)
        imgs[np.arange(n), pos[:, 1], pos[:, 0]] = 255
        return imgs, (pos / (size - 1)).astype(np.float32)

    def segmentation(self, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        imgs = np.full((n, size, size, 3), (200, 60, 50), np.uint8)
        species = np.zeros((n, size, size), np.uint8)
        for i in range(n):
            y, x = rng.integers(0, size - 8, 2)
            imgs[i, y:y + 8, x:x + 8], species[i, y:y + 8, x:x + 8] = (50, 190, 60), 1
        return imgs, species


def hashes(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_bundle(tmp_path_factory.mktemp("faults") / "bundle")


def random_gemm(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    return _model("g", [helper.make_node("Gemm", ["x", "W", "b"], ["h"]), helper.make_node("Tanh", ["h"], ["t"]),
                        helper.make_node("MatMul", ["t", "V"], ["y"])], [_vi("x", ["n", 30])], [_vi("y", ["n", 5])],
                  {"W": rng.normal(size=(30, 40)).astype(np.float32), "b": rng.normal(size=40).astype(np.float32),
                   "V": rng.normal(size=(40, 5)).astype(np.float32)})


def arrays(m: onnx.ModelProto) -> dict[str, np.ndarray]:
    return {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}


@pytest.mark.parametrize("rate", [0.001, 0.01, 0.1, 0.37, 1.0])
def test_exactly_the_promised_count_is_stuck_and_draws_nest(rate: float) -> None:
    m = random_gemm()
    assert weight_names(m) == ["W", "V"] and weight_names(m, biases=True) == ["W", "b", "V"]
    before = arrays(m)
    n = 30 * 40 + 40 * 5
    faulty, rec = fault_model(m, rate, "zero", seed=3, key="g")
    after = arrays(faulty)
    assert rec["weights"] == n and rec["faulted"] == fault_count(n, rate) == int(np.floor(rate * n + 0.5))
    diff = sum(int((before[k] != after[k]).sum()) for k in ("W", "V"))
    assert diff == rec["changed"] == rec["faulted"]  # no weight is exactly 0 here
    assert np.array_equal(before["b"], after["b"]) and arrays(m)["W"].tolist() == before["W"].tolist()
    smaller, _ = fault_model(m, rate / 2, "zero", seed=3, key="g")
    for k in ("W", "V"):  # the stuck set at rate/2 is inside the one at rate
        assert not ((arrays(smaller)[k] == 0) & (after[k] != 0)).any()
    _, rec_b = fault_model(m, rate, "zero", seed=3, key="g", biases=True)
    assert rec_b["weights"] == n + 40 and rec_b["faulted"] == fault_count(n + 40, rate)


def test_stuck_values_of_each_mode_and_rate_one() -> None:
    m = random_gemm(1)
    before = arrays(m)
    zero, rec = fault_model(m, 1.0, "zero", 0, biases=True)
    assert all((a == 0).all() for a in arrays(zero).values()) and rec["faulted"] == rec["weights"]
    high, _ = fault_model(m, 0.5, "high", 0)
    pos, _ = fault_model(m, 0.5, "high-pos", 0)
    for k in ("W", "V"):
        top, a, h, p = np.abs(before[k]).max(), before[k], arrays(high)[k], arrays(pos)[k]
        hit = h != a
        assert np.allclose(np.abs(h[hit]), top) and (np.sign(h[hit]) == np.sign(a[hit])).all()
        assert np.allclose(p[p != a], top)
        assert abs(int((p != a).sum()) - a.size // 2) <= a.size // 2 * 0.2 + 2
    x = np.random.default_rng(0).normal(size=(4, 30)).astype(np.float32)
    for faulty in (zero, high, pos):
        onnx.checker.check_model(faulty, full_check=True)
        y = ort.InferenceSession(faulty.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
        assert y[0].shape == (4, 5) and np.isfinite(y[0]).all()


def test_faulty_copy_loads_and_the_original_is_untouched(bundle: Path, tmp_path: Path) -> None:
    before = hashes(bundle)
    man = write_faulty_bundle(bundle, tmp_path / "copy", 0.2, "high", seed=1)
    assert hashes(bundle) == before
    rt = Runtime(tmp_path / "copy")  # the copy's own manifest: its hashes verify
    assert man["faults"]["mode"] == "high" and man["faults"]["models"]["encoder"]["faulted"] == fault_count(512, 0.2)
    meta = {p.key: p.value for p in onnx.load(str(tmp_path / "copy" / "encoder.onnx")).metadata_props}
    assert json.loads(meta[FAULTS_KEY])["rate"] == 0.2 and CONTRACT_KEY in meta
    assert rt.inverse(np.zeros((1, 2), np.float32)).shape == (1, 2)
    with pytest.raises(ValueError, match="another folder"):
        write_faulty_bundle(bundle, bundle, 0.2, "high")
    with pytest.raises(ValueError, match="not empty"):
        write_faulty_bundle(bundle, tmp_path / "copy", 0.2, "high")


def test_metrics_degrade_with_the_rate(bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import robot.export_cli

    monkeypatch.setattr(robot.export_cli, "SimFrameSource", DotFrames)
    before = hashes(bundle)
    out = tmp_path / "out"
    rates = ["0.05", "0.2", "0.6", "1"]
    assert microfarm_main(["faults", "--bundle", str(bundle), *sum((["--rate", r] for r in rates), []),
                           "--mode", "zero", "--mode", "high", "--seeds", "3", "--episodes", "6", "--frames", "6",
                           "--views", "48", "--save-bundles", "--out", str(out)]) == 0
    assert hashes(bundle) == before
    s = json.loads((out / "summary.json").read_text())
    assert s["fault_free"]["miou"] == pytest.approx(100.0) and s["fault_free"]["reach_error"] < 1e-6
    assert s["references"]["miou_all_foreground"] == pytest.approx(100 * 64 / SEG**2)
    assert 0.45 < s["references"]["reach_error_random_command"] < 0.6
    zero = [r for r in s["table"] if r["mode"] == "zero"]
    reach = [r["reach_error_mean"] for r in zero]
    assert all(a < b for a, b in zip(reach, reach[1:], strict=False)), reach
    assert zero[-1]["miou_mean"] == 0.0 and zero[0]["miou_mean"] >= zero[-1]["miou_mean"]
    high = [r for r in s["table"] if r["mode"] == "high"]
    assert high[-1]["reach_error_mean"] > 0.05 and len(s["draws"]) == 2 * 4 * 3
    assert zero[1]["stuck_weights"] == sum(fault_count(n, 0.2) for n in s["weights"].values())
    lines = (out / "faults.csv").read_text().splitlines()
    assert lines[0].startswith("mode,rate,stuck_weights,n,miou_mean") and len(lines) == 2 + 8
    assert (out / "robustness.png").stat().st_size > 10_000
    Runtime(out / "bundles" / "zero_0.2")


def test_rendered_frames_from_the_simulator(bundle: Path, tmp_path: Path) -> None:
    pytest.importorskip("pybullet")
    out = tmp_path / "out"
    assert microfarm_main(["faults", "--bundle", str(bundle), "--rate", "0.1", "--mode", "high", "--seeds", "1",
                           "--frames", "4", "--views", "4", "--episodes", "2", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["views"] == 4 and np.isfinite(s["table"][0]["reach_error_mean"])
    assert s["table"][0]["stuck_weights"] == sum(fault_count(n, 0.1) for n in s["weights"].values())


@pytest.mark.parametrize(("args", "message"), [
    (["--rate", "0"], "(0, 1]"),
    (["--rate", "1.5"], "(0, 1]"),
    (["--rate", "-0.01"], "(0, 1]"),
    (["--mode", "stuck"], "choose one of"),
    (["--seeds", "0"], "--seeds must be >= 1"),
    (["--model", "crf"], "has no crf model"),
    (["--bundle", "NONE"], "--bundle is required"),
    (["--bundle", "/nonexistent/bundle"], "is not a folder"),
    (["--bundle", "EMPTY"], "not an ONNX bundle"),
    (["--bundle", "TAMPERED"], "does not match the sha256"),
])
def test_bad_input_exits_2_with_one_line_and_writes_nothing(args: list[str], message: str, bundle: Path,
                                                            tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    tampered = write_tiny_bundle(tmp_path / "tampered")
    (tampered / "inverse.onnx").write_bytes((tampered / "inverse.onnx").read_bytes() + b"\0")
    named = {"EMPTY": str(tmp_path / "empty"), "TAMPERED": str(tampered)}
    argv = ["--bundle", str(bundle), *args] if "--bundle" not in args else [named.get(a, a) for a in args]
    argv = [] if argv == ["--bundle", "NONE"] else argv
    out = tmp_path / "out"
    assert microfarm_main(["faults", *argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err
    assert not out.exists()
