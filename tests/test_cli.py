"""The `microfarm` dispatcher and the shared CLI toolkit."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from microfarm import (
    EXTRAS,
    UsageError,
    atomic_path,
    atomic_write_text,
    available_commands,
    missing_dependency,
    next_run_dir,
    parse_config,
    run_command,
)
from tests.conftest import ROOT, write_support


@dataclasses.dataclass
class _Cfg:
    steps: int = 10
    mode: Literal["a", "b"] = "a"
    verbose: bool = False
    tags: list[str] = dataclasses.field(default_factory=list)


def test_parse_config_maps_flags_to_fields() -> None:
    cfg = parse_config(_Cfg, ["--steps", "3", "--mode", "b", "--verbose", "--tags", "x", "--tags", "y"])
    assert cfg == _Cfg(steps=3, mode="b", verbose=True, tags=["x", "y"])
    assert parse_config(_Cfg, []) == _Cfg()


@pytest.mark.parametrize(("argv", "message"), [
    (["--stepz", "3"], "did you mean --steps"),
    (["--mode", "c"], "choose one of: a, b"),
    (["--steps", "many"], "expects int"),
])
def test_parse_config_rejects_bad_flags(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError, match=message):
        parse_config(_Cfg, argv)


def test_help_lists_every_subcommand() -> None:
    proc = subprocess.run([sys.executable, "-m", "microfarm", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0
    commands = available_commands()
    assert {"render", "segment", "explore"} <= set(commands)
    for name in commands:
        assert name in proc.stdout


def test_unknown_command_exits_2_with_suggestion() -> None:
    proc = subprocess.run([sys.executable, "-m", "microfarm", "rendr"], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 2 and "did you mean 'render'" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def test_next_run_dir_increments(tmp_path: Path) -> None:
    a = next_run_dir("x", root=str(tmp_path))
    b = next_run_dir("x", root=str(tmp_path))
    assert (a.name, b.name) == ("1", "2")


def test_atomic_write_keeps_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f.txt"
    atomic_write_text(target, "old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half-writ")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def _without(modules: list[str], argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """``microfarm ARGV`` in a fresh interpreter where importing any of ``modules`` fails as if not installed."""
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.modules.update(dict.fromkeys({modules!r}));"
            f"from microfarm import main; sys.exit(main({argv!r}))")
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize(("blocked", "argv", "extra"), [
    (["torch", "torchvision"], ["segment", "--backend", "torch", "--support", "{support}", "--source", "{tmp}"],
     "train"),
    (["pybullet"], ["render", "--help"], "sim"),  # the subcommand's module itself needs it
    (["pybullet"], ["segment", "--backend", "onnx", "--bundle", "{tmp}", "--support", "{support}", "--source", "sim"],
     None),  # not a bundle: the usual one-line error, before the sim source is opened
])
def test_missing_extra_exits_2_naming_the_extra(tmp_path: Path, blocked: list[str], argv: list[str],
                                                extra: str | None) -> None:
    support = write_support(tmp_path)
    proc = _without(blocked, [a.format(support=support, tmp=tmp_path) for a in argv], tmp_path)
    err = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(err) == 1, proc.stderr
    if extra is not None:
        assert f"{blocked[0]} is not installed" in err[0] and f"pip install 'microfarm[{extra}]'" in err[0], err


def test_sim_robot_without_pybullet_names_the_extra(tmp_path: Path) -> None:
    code = (f"import sys; sys.path.insert(0, {str(ROOT)!r}); sys.modules['pybullet'] = None\n"
            "from robot.registry import make_robot\n"
            "try:\n    make_robot('sim')\nexcept ModuleNotFoundError as e:\n    print(e)")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "pybullet is not installed; it comes with: pip install 'microfarm[sim]'" in proc.stdout, proc.stderr


def test_run_command_maps_only_known_modules(capsys: pytest.CaptureFixture[str]) -> None:
    def needs(name: str):
        def fn(argv: list[str]) -> int:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return fn

    assert run_command(needs("torch._C"), [], "microfarm x") == 2
    assert capsys.readouterr().err.strip() == ("microfarm x: error: torch is not installed; it comes with: "
                                               "pip install 'microfarm[train]'")
    assert run_command(needs("ray"), [], "microfarm x") == 2 and "microfarm[cluster]" in capsys.readouterr().err
    with pytest.raises(ModuleNotFoundError):  # one of ours or a typo: a bug, shown with its traceback
        run_command(needs("vision.nonexistent"), [], "microfarm x")
    assert set(EXTRAS.values()) == {"train", "sim", "cluster"}
    assert "onnxruntime-gpu" in (missing_dependency(ModuleNotFoundError(name="onnxruntime")) or "")
