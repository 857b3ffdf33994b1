"""The distractor region: its box, the pixels that see it, and frames that cannot be predicted there."""

from __future__ import annotations

import math

import gymnasium as gym
import numpy as np
import pytest

import sim
from sim.distractor import DistractorRegion, parse_region


@pytest.mark.parametrize("value,needle", [("0.6,0,1.2,1", "leaves the bed"), ("0.6,0.5,0.6,1", "zero size"),
                                          ("a,b", "four numbers"), ("0.1,0.2,0.3", "four numbers")])
def test_bad_regions_are_refused_with_the_fix(value: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_region(value)


def test_straight_down_camera_maps_pixels_onto_the_soil() -> None:
    rot = np.eye(3)  # columns: right = +x, up = +y, backward = +z (looks down)
    pos = np.array([0.375, 0.375, 0.3])
    xy = DistractorRegion.ground_points(pos, rot, 64, 60.0)
    half = 0.3 * math.tan(math.radians(30))
    assert np.allclose(xy[32, 32], [0.375 + half / 64, 0.375 - half / 64], atol=1e-9)
    assert xy[32, 63, 0] == pytest.approx(0.375 + half * 63 / 64, abs=1e-9)  # right edge: +x
    assert xy[0, 32, 1] == pytest.approx(0.375 + half * 63 / 64, abs=1e-9)  # top row: +y
    region = DistractorRegion((0.5, 0.0, 1.0, 1.0))  # x >= 0.375 m
    m = region.mask(pos, rot, 64, 60.0)
    assert not m[:, :32].any() and m[:, 32:].all()
    assert region.in_region(pos + [0.01, 0, 0], rot) and not region.in_region(pos - [0.01, 0, 0], rot)


def test_frames_in_the_distractor_change_at_every_visit_and_the_rest_do_not() -> None:
    env = gym.make(sim.ENV_IDS["gantry"], size=32, distractor="0.6,0,1,1").unwrapped
    try:
        env.reset(seed=0)
        looks = {}
        for name, x in (("out", 0.2), ("in", 0.9)):
            frames, infos = [], []
            for _ in range(2):
                env.step(np.array([0.5, 0.5], np.float32))
                obs, _, _, _, info = env.step(np.array([x, 0.5], np.float32))
                frames.append(obs["image"].astype(int))
                infos.append(info)
            looks[name] = (np.abs(frames[0] - frames[1]).mean(), infos[0])
        assert looks["out"][0] == 0 and looks["out"][1]["distractor_fraction"] == 0
        assert not looks["out"][1]["in_distractor"]
        assert looks["in"][0] > 5 and looks["in"][1]["in_distractor"]
        assert 0.5 < looks["in"][1]["distractor_fraction"] < 1
    finally:
        env.close()
