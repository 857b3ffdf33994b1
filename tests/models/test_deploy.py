"""`microfarm deploy`: a short `both` session on the simulator, a clean Ctrl-C stop, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from microfarm import main as microfarm_main
from robot.base import Feature, Robot
from robot.registry import ROBOTS, register_robot
from tests.conftest import write_support
from tests.models.test_export_bundle import session_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return session_bundle(tmp_path_factory)


@pytest.fixture(scope="module")
def support(tmp_path_factory: pytest.TempPathFactory) -> str:
    return write_support(tmp_path_factory.mktemp("support"), 64, 64)


def test_both_session_on_the_simulator(bundle: Path, support: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert microfarm_main(["deploy", "--bundle", str(bundle), "--robot", "sim", "--task", "both", "--support",
                           support, "--steps", "5", "--save-masks", "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 5 and s["stopped"] == "steps done" and s["fps"] > 0
    assert {"inverse", "move", "encode", "segment", "step"} <= set(s["latency_ms"])
    assert s["latency_ms"]["segment"]["p95"] >= s["latency_ms"]["segment"]["p50"] > 0
    assert s["reach_error"]["n_goals"] == 9 and set(s["reach_error"]["per_goal"]) == {"0", "1", "2", "3", "4"}
    assert s["crf_gate"]["enabled"] and isinstance(s["crf_gate"]["crf_on"], bool)  # checked before step 0
    assert s["scales"] == [1.0] and s["segment_input_sides"] == [64]
    rows = [json.loads(line) for line in (out / "steps.jsonl").read_text().splitlines()]
    assert [r["goal"] for r in rows] == [0, 1, 2, 3, 4] and all(0 <= v <= 1 for r in rows for v in r["command"])
    assert cv2.imread(str(out / "masks" / "step_000004.png"), 0).shape == (64, 64)


class InterruptingRobot(Robot):
    """A camera robot whose third observation is interrupted by Ctrl-C."""

    name = "interrupting"
    instances: list[InterruptingRobot] = []
    observation_features = {"image": Feature((64, 64, 3), "uint8", 0, 255), "motor": Feature((2,), "float32")}
    action_features = {"motor": Feature((2,), "float32", 0.0, 1.0, ("x", "y"))}

    def __init__(self) -> None:
        super().__init__()
        self.calls, self.motor = 0, np.zeros(2, np.float32)
        InterruptingRobot.instances.append(self)

    def _connect(self) -> None: ...

    def _disconnect(self) -> None: ...

    def _get_observation(self) -> dict[str, np.ndarray]:
        self.calls += 1
        if self.calls == 3:
            raise KeyboardInterrupt
        return {"image": np.full((64, 64, 3), 90, np.uint8), "motor": self.motor.copy()}

    def _send_action(self, action: np.ndarray) -> None:
        self.motor = action


def test_ctrl_c_stops_cleanly(bundle: Path, tmp_path: Path) -> None:
    register_robot("interrupting", "tests.models.test_deploy:InterruptingRobot")
    try:
        out = tmp_path / "out"
        assert microfarm_main(["deploy", "--bundle", str(bundle), "--robot", "interrupting", "--task", "reach",
                               "--steps", "0", "--out", str(out)]) == 0
    finally:
        ROBOTS.pop("interrupting", None)
    s = json.loads((out / "summary.json").read_text())
    assert s["stopped"] == "interrupted (Ctrl-C)" and s["steps"] == 2
    import importlib

    registered = importlib.import_module("tests.models.test_deploy").InterruptingRobot  # the class deploy built
    assert registered.instances and not registered.instances[-1].is_connected


@pytest.mark.parametrize(("make", "message"), [
    (lambda b, s, d: ["--support", s], "--bundle is required"),
    (lambda b, s, d: ["--bundle", str(d), "--support", s], "not an ONNX bundle"),
    (lambda b, s, d: ["--bundle", str(b)], "needs at least one --support"),
    (lambda b, s, d: ["--bundle", str(b), "--support", f"{d}/x.png"], "must be IMG:MASK"),
    (lambda b, s, d: ["--bundle", str(b), "--support", s, "--robot", "simm"], "did you mean 'sim'"),
    (lambda b, s, d: ["--bundle", str(b), "--support", s, "--task", "dance"], "choose one of: segment, reach, both"),
    (lambda b, s, d: ["--bundle", str(b), "--support", s, "--colour-prior", "2"], "--colour-prior must be in [0, 1]"),
    (lambda b, s, d: ["--bundle", str(b), "--support", s, "--scales", "-1"], "--scales -1 is not valid"),
    (lambda b, s, d: ["--bundle", str(b), "--support", s, "--imgsz", "64", "--scales", "0.1"], "must be in 16..4096"),
    (lambda b, s, d: ["--bundle", str(b), "--task", "reach", "--goal", f"{d}/none.png"], "does not exist"),
    (lambda b, s, d: ["--bundle", str(b), "--support", s, "--crf-threads", "-1"], "--crf-threads must be >= 0"),
    (lambda b, s, d: ["--bundle", str(b), "--task", "reach", "--providers", "cuda"]
     if "CUDAExecutionProvider" not in __import__("onnxruntime").get_available_providers()
     else ["--bundle", str(d)], "not available"),
])
def test_bad_input_exits_2_with_one_line(bundle: Path, support: str, tmp_path: Path, make, message: str,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert microfarm_main(["deploy", *make(bundle, support, tmp_path), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0], err


def test_segment_session_on_recorded_frames(bundle: Path, support: str, tmp_path: Path) -> None:
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(3):
        img = np.zeros((48, 64, 3), np.uint8)
        img[:, 20 + 8 * i:] = (40, 180, 40)
        cv2.imwrite(str(frames / f"{i:04d}.png"), img)
    out = tmp_path / "out"
    assert microfarm_main(["deploy", "--bundle", str(bundle), "--robot", f"files:{frames}", "--task", "segment",
                           "--support", support, "--steps", "4", "--save-masks", "--crf-threads", "2",
                           "--out", str(out)]) == 0
    s = json.loads((out / "summary.json").read_text())
    assert s["steps"] == 4 and s["robot"] == f"files:{frames}" and "segment" in s["latency_ms"]
    assert sorted(p.name for p in (out / "masks").iterdir()) == [f"step_{k:06d}.png" for k in range(4)]
    assert cv2.imread(str(out / "masks" / "step_000003.png"), 0).shape == (48, 64)  # the 4th step: frame 0 again


def test_files_robot_without_a_folder_exits_2(bundle: Path, support: str, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert microfarm_main(["deploy", "--bundle", str(bundle), "--robot", f"files:{tmp_path}/none", "--task",
                           "segment", "--support", support, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot build robot" in err[0] and "does not exist" in err[0], err
