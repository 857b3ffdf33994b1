"""The `microfarm` dispatcher and the shared CLI toolkit."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

from microfarm import UsageError, atomic_path, atomic_write_text, available_commands, next_run_dir, parse_config
from tests.conftest import ROOT


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
