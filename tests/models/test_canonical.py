"""models.canonical: the canonical form of tanh / ReLU MLPs (Petzka, Trimmel & Sminchisescu 2020) keeps the function,
maps equivalent networks (permuted + sign-flipped or rescaled) to the same weights, is idempotent; the `microfarm
canonical` command and `microfarm export --canonical` reject bad input with one line, exit 2."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from microfarm import main as microfarm_main
from models.canonical import (
    as_layers,
    canonical_guided_net,
    canonical_module,
    canonicalize,
    guided_layers,
    mlp_apply,
    module_layers,
    module_linears,
    random_guided_symmetry,
    random_symmetry,
    weight_distance,
)
from models.export_sources import write_demo_sources
from models.guided_net import GuidedNet, GuidedNetConfig
from models.mlp import forward_model, inverse_model
from models.weights import load_weights, read_metadata
from robot.canonical_cli import CanonicalConfig, canonical_report, load_source


def _tanh_mlp(seed: int, zero_bias: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    m = forward_model(3, 5, (16, 12, 8))
    if not zero_bias:  # trained networks have non-zero biases; the Keras initialisation has zero ones
        with torch.no_grad():
            for lin in m.layers:
                lin.bias.normal_(0, 0.5)
    return m.eval()


def _relu_chain(seed: int, conv: bool) -> nn.Sequential:
    torch.manual_seed(seed)
    lin = (lambda a, b: nn.Conv2d(a, b, 1)) if conv else nn.Linear
    return nn.Sequential(lin(4, 10), nn.ReLU(), lin(10, 9), nn.ReLU(), lin(9, 3)).eval()


def _nets() -> list[tuple[str, nn.Module, torch.Tensor]]:
    return [("tanh", _tanh_mlp(0), torch.randn(64, 3)), ("tanh0", _tanh_mlp(1, zero_bias=True), torch.randn(64, 3)),
            ("relu", _relu_chain(2, conv=False), torch.randn(64, 4)),
            ("relu1x1", _relu_chain(3, conv=True), torch.randn(4, 4, 5, 5))]


def _close(a: list[tuple[np.ndarray, np.ndarray]], b: list[tuple[np.ndarray, np.ndarray]]) -> bool:
    return all(np.allclose(x, y, atol=1e-9) for pa, pb in zip(a, b, strict=True) for x, y in zip(pa, pb, strict=True))


@pytest.mark.parametrize("name,net,x", _nets(), ids=[n for n, _, _ in _nets()])
def test_canonical_network_computes_the_same_function(name: str, net: nn.Module, x: torch.Tensor) -> None:
    with torch.no_grad():
        assert (canonical_module(net)(x) - net(x)).abs().max() < 1e-5
    layers, act = module_layers(net)
    if x.ndim == 2:
        xs = x.numpy()
        assert np.abs(mlp_apply(canonicalize(layers, act), xs, act) - mlp_apply(layers, xs, act)).max() < 1e-5


@pytest.mark.parametrize("name,net,x", _nets(), ids=[n for n, _, _ in _nets()])
def test_equivalent_networks_share_one_canonical_form(name: str, net: nn.Module, x: torch.Tensor) -> None:
    layers, act = module_layers(net)
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(8, layers[0][0].shape[1]))
    for _ in range(3):
        other = random_symmetry(layers, act, rng)
        assert np.abs(mlp_apply(other, xs, act) - mlp_apply(layers, xs, act)).max() < 1e-9
        assert weight_distance(layers, other) > 0.1
        assert _close(canonicalize(layers, act), canonicalize(other, act))
        assert weight_distance(canonicalize(layers, act), canonicalize(other, act)) < 1e-9


@pytest.mark.parametrize("name,net,x", _nets(), ids=[n for n, _, _ in _nets()])
def test_canonicalisation_is_idempotent(name: str, net: nn.Module, x: torch.Tensor) -> None:
    layers, act = module_layers(net)
    once = canonicalize(layers, act)
    assert _close(canonicalize(once, act), once)
    assert _close(module_layers(canonical_module(canonical_module(net)))[0], module_layers(canonical_module(net))[0])


def test_canonical_form_is_as_documented() -> None:
    tanh = canonicalize(module_layers(_tanh_mlp(0))[0], "tanh")
    for _, b in tanh[:-1]:
        assert (b >= 0).all() and (np.diff(b) >= 0).all()
    relu = canonicalize(module_layers(_relu_chain(2, conv=False))[0], "relu")
    for w, b in relu[:-1]:
        assert np.allclose(np.sqrt((w ** 2).sum(1) + b ** 2), 1) and (np.diff(b) >= 0).all()
    assert len(canonicalize(module_layers(inverse_model(2, 4, (6,)))[0], "tanh")) == 2


def test_guided_net_fuse_and_head_units() -> None:
    torch.manual_seed(0)
    net = GuidedNet(GuidedNetConfig(hidden=8)).eval()
    with torch.no_grad():  # non-zero biases so that the sort key is not all ties
        for m in guided_layers_modules(net):
            m.bias.normal_(0, 0.1)
    q, mask = torch.rand(2, 3, 64, 64), (torch.rand(1, 1, 64, 64) > 0.5).float()
    canon = canonical_guided_net(net)
    other = random_guided_symmetry(net, np.random.default_rng(0))
    with torch.no_grad():
        g = net.guide(q[:1], mask)
        ref = net.segment(q, g)
        assert (canon.segment(q, g) - ref).abs().max() < 1e-5 and (other.segment(q, g) - ref).abs().max() < 1e-5
    assert weight_distance(guided_layers(net), guided_layers(other)) > 0.1
    assert _close(guided_layers(canonical_guided_net(other)), guided_layers(canon))
    assert _close(guided_layers(canonical_guided_net(canon)), guided_layers(canon))


def guided_layers_modules(net: GuidedNet) -> list[nn.Module]:
    return [net.fuse_mid.conv[0], net.fuse_high.conv[0], net.head[0], net.head[2]]


def test_uncovered_modules_and_bad_shapes_are_refused() -> None:
    with pytest.raises(ValueError, match="not nn.Tanh"):
        module_linears(nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)))
    with pytest.raises(ValueError, match="1x1"):
        module_linears(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1)))
    with pytest.raises(ValueError, match="one kind"):
        module_linears(nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 4), nn.Tanh(), nn.Linear(4, 1)))
    with pytest.raises(ValueError, match="takes 5 inputs"):
        as_layers([(np.zeros((4, 3)), np.zeros(4)), (np.zeros((2, 5)), np.zeros(2))])
    with pytest.raises(ValueError, match="different shapes"):
        weight_distance([(np.ones((4, 3)), np.ones(4))], [(np.ones((3, 4)), np.ones(3))])
    with pytest.raises(ValueError, match="activation"):
        canonicalize([(np.ones((4, 3)), np.ones(4)), (np.ones((2, 4)), np.ones(2))], "sigmoid")  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    base = tmp_path_factory.mktemp("canon")
    a, seg = write_demo_sources(base / "a", tiny=True, seed=0)
    b, _ = write_demo_sources(base / "b", tiny=True, seed=1)
    return a, b, seg


def test_command_writes_canonical_weights_and_compares_runs(runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    a, b, seg = runs
    out = tmp_path / "canon.safetensors"
    assert microfarm_main(["canonical", str(a), "--out", str(out), "--against", str(b)]) == 0
    state, config = load_weights(out, kind="canonical_mlps")
    src = load_source(a)
    for name in ("forward", "inverse"):
        mlp = canonical_module(src[name].module)
        assert config[name] == src[name].config
        assert all(torch.equal(v, state[f"{name}.{k}"]) for k, v in mlp.state_dict().items())
    rep = canonical_report(a, CanonicalConfig(against=b), log=lambda *_: None)
    assert rep["forward"]["self"]["canonical"] < 1e-6 < rep["forward"]["self"]["raw"]
    assert rep["inverse"]["against"]["raw"] > 0.1
    one = tmp_path / "fwd.safetensors"  # a single weights file keeps its kind: loadable as the original
    assert microfarm_main(["canonical", str(a / "weights" / "forward.safetensors"), "--out", str(one)]) == 0
    assert read_metadata(one)["kind"] == "forward_mlp" and read_metadata(one)["extra"]["canonical"] is True
    rep = canonical_report(seg, CanonicalConfig(), log=lambda *_: None)
    assert rep["segmenter"]["self"]["canonical"] < 1e-6


@pytest.mark.parametrize("argv,message", [
    (["canonical"], "give the run folder"),
    (["canonical", "--out", "x.safetensors"], "give the run folder"),
    (["canonical", "/nonexistent/run"], "neither an exploration run"),
    (["canonical", "{a}", "--out", "x.txt"], "--out must name a .safetensors"),
    (["canonical", "{a}", "--against", "{seg}"], "same architecture"),
    (["canonical", "{a}", "--seed", "x"], "seed"),
    (["canonical", "{a}", "--outt", "x.safetensors"], "did you mean --out"),
    (["canonical", "{tmp}"], "has no weights/forward.safetensors"),
    (["export", "--canonical", "--no-segmentation"], "--canonical needs --explore-run"),
])
def test_bad_input_exits_2_with_one_line(argv: list[str], message: str, runs: tuple[Path, Path, Path],
                                         tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a, _, seg = runs
    argv = [s.format(a=a, seg=seg, tmp=tmp_path) for s in argv]
    assert microfarm_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


class _RandomFrames:
    """Random frames as the export's ``FrameSource`` (no simulator)."""

    def features(self, arm: str, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(seed)
        return rng.integers(0, 256, (n, size, size, 3), np.uint8), rng.random((n, 2), np.float32)

    def segmentation(self, size: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        raise AssertionError("not needed with --no-segmentation --no-crf")


def test_export_canonical_writes_the_canonical_mlps(runs: tuple[Path, Path, Path], tmp_path: Path) -> None:
    import json

    import onnxruntime as ort

    from models.bundle_export import ExportConfig, write_bundle

    a, _, _ = runs
    cfg = ExportConfig(out=tmp_path / "b", explore_run=a, segmentation=False, crf=False, canonical=True, eval_frames=2)
    out = write_bundle(cfg, _RandomFrames(), log=lambda *_: None)
    assert json.loads((out / "manifest.json").read_text())["training"]["canonical"] is True
    fwd = canonical_module(load_source(a)["forward"].module)
    w0 = ort.InferenceSession(str(out / "forward.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).random((5, 2), np.float32)
    with torch.no_grad():
        assert np.abs(w0.run(None, {"motor": x})[0] - fwd(torch.from_numpy(x)).numpy()).max() < 1e-5
