"""The robot install: the wheel with its base dependencies only (`pip install microfarm`: no torch, torchvision,
pybullet) runs `microfarm segment --backend onnx` and `microfarm deploy --robot files:DIR` on an ONNX bundle, and a
command that needs an extra says which one in one line (exit 2).

The wheel is built from a copy of the sources, installed into a fresh venv (from the package index: skipped where
it cannot be reached) once per module; the bundle is exported here, with the dev install (torch). About a minute.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.conftest import ROOT, write_support

SOURCES = ("pyproject.toml", "README.md", "microfarm.py", "microfarm_toolkit.py", "robot", "vision", "sim", "models")
HEAVY = ("torch", "torchvision", "pybullet", "gymnasium", "pydensecrf", "matplotlib", "scipy", "onnx", "onnxscript",
         "safetensors", "minisom", "ray")
MAX_SITE_PACKAGES_MB = 400  # numpy + opencv-python-headless + onnxruntime are about 330 MB of it


def _index_reachable() -> str | None:
    """None if the package index answers, else why not."""
    url = os.environ.get("PIP_INDEX_URL", "https://pypi.org/simple").rstrip("/") + "/pip/"
    try:
        with urllib.request.urlopen(url, timeout=10):
            return None
    except OSError as e:
        return f"the package index {url} cannot be reached ({e}); the base-install test needs it"


def _run(cmd: list[str], cwd: Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _check(proc: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert proc.returncode == 0, f"{' '.join(proc.args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with the microfarm wheel and its base dependencies only."""
    why = _index_reachable()
    if why:
        pytest.skip(why)
    base = tmp_path_factory.mktemp("install")
    src = base / "src"  # a copy: building in the checkout would write build/ and *.egg-info there
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            src.mkdir(exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    _check(_run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check", "-q",
                 "-w", str(base / "wheels"), str(src)], base))
    (wheel,) = (base / "wheels").glob("microfarm-*.whl")
    _check(_run([sys.executable, "-m", "venv", str(base / "venv")], base))
    _check(_run([str(base / "venv" / "bin" / "pip"), "install", "--disable-pip-version-check", "-q", str(wheel)], base))
    return base / "venv"


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny bundle (untrained models, imgsz 64, CRF, no fp16/int8 variants), exported with the dev install."""
    from robot.export_cli import ExportConfig, export_bundle, write_demo_sources

    base = tmp_path_factory.mktemp("install_bundle")
    run, seg = write_demo_sources(base / "src", tiny=True)
    export_bundle(ExportConfig(out=base / "bundle", explore_run=run, segmenter=seg, imgsz=64, calib=2, eval_frames=4),
                  log=lambda *a: None)
    return base / "bundle"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, Path]:
    """A support example and a folder of three synthetic frames (a green plant on soil, moving right)."""
    base = tmp_path_factory.mktemp("install_data")
    frames = base / "frames"
    frames.mkdir()
    for i in range(3):
        img = np.full((48, 64, 3), (30, 60, 90), np.uint8)  # BGR soil
        img[:, 16 + 8 * i:] = (40, 180, 40)
        cv2.imwrite(str(frames / f"frame_{i:03d}.png"), img)
    return write_support(base, 48, 64), frames


def _microfarm(venv: Path, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return _run([str(venv / "bin" / "microfarm"), *args], cwd, timeout=300)


def test_base_install_has_no_torch_pybullet_or_other_extras(venv: Path) -> None:
    code = ("import importlib.util, json; print(json.dumps({m: importlib.util.find_spec(m) is not None for m in "
            f"{HEAVY!r} + ('onnxruntime', 'cv2', 'numpy', 'microfarm', 'robot.file_camera')}}))")
    found = json.loads(_check(_run([str(venv / "bin" / "python"), "-c", code], venv)).stdout)
    assert [m for m in HEAVY if found[m]] == [], "the base install pulled in extras"
    assert all(found[m] for m in ("onnxruntime", "cv2", "numpy", "microfarm", "robot.file_camera"))
    site = next((venv / "lib").glob("python3*/site-packages"))
    mb = int(_check(_run(["du", "-sk", str(site)], venv)).stdout.split()[0]) / 1024
    print(f"base install: du -sh {site} -> {mb:.0f} MB")
    assert mb < MAX_SITE_PACKAGES_MB, f"the base install takes {mb:.0f} MB (goal: under {MAX_SITE_PACKAGES_MB} MB)"


def test_segment_with_the_onnx_backend(venv: Path, bundle: Path, data: tuple[str, Path], tmp_path: Path) -> None:
    support, frames = data
    out = tmp_path / "seg"
    _check(_microfarm(venv, "segment", "--backend", "onnx", "--bundle", str(bundle), "--support", support,
                      "--source", str(frames), "--out", str(out), cwd=tmp_path))
    masks = sorted((out / "masks").iterdir())
    assert [p.name for p in masks] == ["frame_000.png", "frame_001.png", "frame_002.png"]
    assert cv2.imread(str(masks[0]), cv2.IMREAD_UNCHANGED).shape == (48, 64)
    assert json.loads((out / "summary.json").read_text())["frames"] == 3


def test_deploy_on_recorded_frames(venv: Path, bundle: Path, data: tuple[str, Path], tmp_path: Path) -> None:
    support, frames = data
    out = tmp_path / "dep"
    _check(_microfarm(venv, "deploy", "--bundle", str(bundle), "--robot", f"files:{frames}", "--task", "both",
                      "--support", support, "--steps", "4", "--save-masks", "--out", str(out), cwd=tmp_path))
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 4 and s["stopped"] == "steps done" and {"inverse", "encode", "segment"} <= set(s["latency_ms"])
    assert len(list((out / "masks").glob("step_*.png"))) == 4


@pytest.mark.parametrize(("args", "extra"), [
    (["segment", "--backend", "torch", "--support", "{support}", "--source", "{frames}", "--out", "{out}"], "train"),
    (["segment", "--backend", "onnx", "--bundle", "{bundle}", "--support", "{support}", "--source", "sim",
      "--out", "{out}"], "sim"),
    (["deploy", "--bundle", "{bundle}", "--robot", "sim", "--task", "segment", "--support", "{support}",
      "--out", "{out}"], "sim"),
    (["export", "--out", "{out}"], "train"),
    (["render", "--help"], "sim"),
    (["explore", "--help"], "train"),
])
def test_a_missing_extra_is_one_line_naming_it(venv: Path, bundle: Path, data: tuple[str, Path], tmp_path: Path,
                                               args: list[str], extra: str) -> None:
    support, frames = data
    argv = [a.format(support=support, frames=frames, bundle=bundle, out=tmp_path / "o") for a in args]
    proc = _microfarm(venv, *argv, cwd=tmp_path)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    assert f"pip install 'microfarm[{extra}]'" in err[0] and "is not installed" in err[0], err


def test_help_lists_the_commands(venv: Path, tmp_path: Path) -> None:
    proc = _check(_microfarm(venv, "--help", cwd=tmp_path))
    assert "deploy" in proc.stdout and "segment" in proc.stdout
