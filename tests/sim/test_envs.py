"""The Gymnasium envs: API compliance, determinism, masks, path frames, the arms' kinematics."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.utils.passive_env_checker import env_render_passive_checker

import sim
from sim.arms import camera_xy
from tests.conftest import ROOT


@pytest.mark.parametrize("env_id", sorted(sim.ENV_IDS.values()))
def test_check_env_passes_without_warnings(env_id: str) -> None:
    """check_env on the rgb_array env, render check included (rgb_array here; human below)."""
    env = gym.make(env_id, size=32, render_mode="rgb_array")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        check_env(env.unwrapped, skip_render_check=True)
        env.reset(seed=0)
        env_render_passive_checker(env.unwrapped)
    assert [str(w.message) for w in caught] == []
    image = env.render()
    assert image.shape == (32, 32, 3) and image.dtype == np.uint8
    env.close()


CHECK_ALL_RENDER_MODES = """
import sys, warnings, gymnasium as gym, sim
from gymnasium.utils.env_checker import check_env
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    check_env(gym.make(sys.argv[1], size=32, render_mode="rgb_array").unwrapped)
assert not caught, [str(w.message) for w in caught]
print("ok")
"""


@pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="the PyBullet GUI (render_mode='human') needs a display")
@pytest.mark.parametrize("env_id", sorted(sim.ENV_IDS.values()))
def test_check_env_with_every_render_mode(env_id: str) -> None:
    """check_env recreates the env in every render mode, the GUI included: in a subprocess, so the GUI's
    OpenGL threads never share a process with the rest of the suite."""
    proc = subprocess.run([sys.executable, "-c", CHECK_ALL_RENDER_MODES, env_id], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip().endswith("ok"), proc.stderr[-2000:]


def test_human_mode_without_display_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DISPLAY", raising=False)
    with pytest.raises(RuntimeError, match="xvfb-run"):
        gym.make("microfarm/GantryCamera-v0", render_mode="human")


@pytest.mark.parametrize("kwargs", [{}, {"randomize": True, "scene_seed": None}])
def test_same_seed_gives_byte_identical_observations(kwargs: dict) -> None:
    def rollout() -> list[bytes]:
        env = gym.make("microfarm/GantryCamera-v0", size=32, **kwargs)
        obs, _ = env.reset(seed=123)
        frames = [obs["image"].tobytes()]
        for a in ([0.1, 0.2], [0.9, 0.5], [0.4, 0.8]):
            obs, *_ = env.step(np.asarray(a, np.float32))
            frames.append(obs["image"].tobytes() + obs["motor"].tobytes())
        env.close()
        return frames

    assert rollout() == rollout()


def test_other_layout_seed_changes_the_image() -> None:
    images = []
    for scene_seed in (0, 1):
        env = gym.make("microfarm/GantryCamera-v0", size=32, scene_seed=scene_seed)
        obs, _ = env.reset(seed=0)
        images.append(obs["image"])
        env.close()
    assert not np.array_equal(images[0], images[1])


def test_camera_over_a_plant_sees_its_species_and_instance() -> None:
    env = gym.make("microfarm/GantryCamera-v0", size=64, masks=True, depth=True).unwrapped
    env.reset(seed=0)
    plants = sorted(env.scene.plants, key=lambda pl: -pl.radius)[:5]
    hits = 0
    for plant in plants:
        motor = np.clip(np.array([plant.x, plant.y]) / 0.75, 0, 1).astype(np.float32)
        obs, _, _, _, info = env.step(motor)
        sp, inst = info["species_mask"], info["instance_mask"]
        assert sp.shape == (64, 64) and sp.dtype == np.uint8 and inst.dtype == np.uint16
        centre_inst = inst[30:34, 30:34]
        if np.any(centre_inst == plant.instance_id):
            hits += 1
            assert np.all(sp[inst == plant.instance_id] == plant.species_id)
            assert 0.0 < info["depth"][32, 32] <= env.height + 1e-3
    env.close()
    assert hits >= 4, f"only {hits}/5 plants seen under the camera"


def test_path_frames_follow_the_straight_line() -> None:
    env = gym.make("microfarm/GantryCamera-v0", size=16, path_frames=True, path_step=0.05)
    env.reset(seed=0, options={"motor": [0.0, 0.0]})
    obs, _, _, _, info = env.step(np.array([0.3, 0.4], np.float32))
    path = info["path"]
    assert len(path) == 10  # 0.5 / 0.05
    motors = np.array([f["motor"] for f in path])
    np.testing.assert_allclose(motors[-1], [0.3, 0.4], atol=1e-6)
    np.testing.assert_allclose(motors[:, 1] / motors[:, 0], 4 / 3, rtol=1e-4)
    assert np.array_equal(path[-1]["image"], obs["image"])
    env.close()


@pytest.mark.parametrize("arm", ["gantry", "arm"])
def test_closed_form_camera_xy_matches_pybullet(arm: str) -> None:
    env = gym.make(sim.ENV_IDS[arm], size=8).unwrapped
    env.reset(seed=0)
    for m in np.random.default_rng(0).random((5, 2)).astype(np.float32):
        env.step(m)
        pos, _ = env.arm.camera_pose()
        np.testing.assert_allclose(camera_xy(arm, m), pos[:2], atol=1e-5)
        assert pos[2] == pytest.approx(env.height, abs=1e-5)
    env.close()


def test_arm_reaches_every_corner_of_the_bed() -> None:
    grid = np.stack(np.meshgrid(np.linspace(0, 1, 201), np.linspace(0, 1, 201)), -1).reshape(-1, 2)
    xy = camera_xy("arm", grid)
    for corner in ([0, 0], [0.75, 0], [0, 0.75], [0.75, 0.75], [0.375, 0.375]):
        assert np.min(np.linalg.norm(xy - np.array(corner), axis=1)) < 0.01


def test_third_dof_moves_the_camera_height() -> None:
    env = gym.make("microfarm/ArmCamera-v0", size=8, dof=3, masks=True).unwrapped
    env.reset(seed=0)
    assert env.action_space.shape == (3,)
    heights = []
    for z in (0.0, 1.0):
        env.step(np.array([0.5, 0.5, z], np.float32))
        heights.append(env.arm.camera_pose()[0][2])
    assert heights[0] == pytest.approx(0.18, abs=1e-5) and heights[1] == pytest.approx(0.5, abs=1e-5)
    env.close()


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="choose one of: gantry, arm"):
        sim.envs.CameraArmEnv(arm="crane")
    with pytest.raises(ValueError, match="dof"):
        gym.make("microfarm/GantryCamera-v0", dof=4)


@pytest.mark.parametrize("arm", ["gantry", "arm"])
@pytest.mark.parametrize("dof", [2, 3])
def test_camera_never_sees_its_own_arm(arm: str, dof: int) -> None:
    """The carriage and links run above the highest camera position (dof=3 included)."""
    env = gym.make(sim.ENV_IDS[arm], size=64, dof=dof).unwrapped
    env.reset(seed=0)
    for m in np.random.default_rng(1).random((6, dof)).astype(np.float32):
        env.step(m)
        pos, rot = env.arm.camera_pose()
        seg = env.camera.render(pos, rot, segmentation=True).seg
        own = (seg >= 0) & ((seg & 0xFFFFFF) == env.arm.uid) & ((seg >> 24) > 0)  # moving links; the base
        assert not np.any(own), f"{arm} sees its own links at {m}"  # (pillar, rails) stands in the scene
    env.close()
