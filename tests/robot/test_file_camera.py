"""`FileCameraRobot` (`--robot files:DIR`): recorded frames replayed in name order, round and round."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from robot.file_camera import FileCameraRobot, FrameFolderError
from robot.registry import make_robot, split_robot_name


def _write(folder: Path, name: str, rgb: tuple[int, int, int], h: int = 20, w: int = 30) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(folder / name), cv2.cvtColor(np.full((h, w, 3), rgb, np.uint8), cv2.COLOR_RGB2BGR))


def test_frames_in_name_order_round_and_round_in_rgb(tmp_path: Path) -> None:
    _write(tmp_path, "b.png", (0, 200, 0))
    _write(tmp_path, "a.jpg", (200, 0, 0))
    _write(tmp_path, "c.bmp", (0, 0, 200), h=40, w=60)  # another size: resized to the first frame's
    (tmp_path / "notes.txt").write_text("not a frame")
    robot = make_robot(f"files:{tmp_path}")
    assert isinstance(robot, FileCameraRobot) and [p.name for p in robot.frames] == ["a.jpg", "b.png", "c.bmp"]
    with robot:
        seen = []
        for _ in range(4):
            obs = robot.get_observation()
            assert obs["image"].shape == (20, 30, 3) and obs["image"].dtype == np.uint8
            seen.append((robot.frame_name, int(np.argmax(obs["image"][5, 5]))))
    assert seen == [("a.jpg", 0), ("b.png", 1), ("c.bmp", 2), ("a.jpg", 0)]  # RGB, not OpenCV's BGR


def test_motor_echoes_the_command_and_size_resizes(tmp_path: Path) -> None:
    _write(tmp_path, "f.png", (1, 2, 3))
    robot = FileCameraRobot(tmp_path, size=8)
    with robot:
        assert robot.get_observation()["motor"].tolist() == [0.5, 0.5]
        assert robot.send_action([0.2, 1.7]).tolist() == pytest.approx([0.2, 1.0])
        obs = robot.get_observation()
    assert obs["image"].shape == (8, 8, 3) and obs["motor"].tolist() == pytest.approx([0.2, 1.0])


@pytest.mark.parametrize(("spec", "message"), [
    ("files", "needs a folder of images: --robot files:DIR"),
    ("files:{tmp}/missing", "does not exist"),
    ("files:{tmp}/empty", "has no images"),
    ("files:{tmp}/broken", "cannot read frame"),
])
def test_bad_folders_say_how_to_fix(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "x.png").write_bytes(b"not a png")
    with pytest.raises(FrameFolderError, match=message):
        make_robot(spec.format(tmp=tmp_path))


def test_split_robot_name() -> None:
    assert split_robot_name("files:/a:b") == ("files", "/a:b")
    assert split_robot_name("sim") == ("sim", None)
    assert split_robot_name("mypkg.robots:MyRobot") == ("mypkg.robots:MyRobot", None)  # an entry point

