"""`check_robot`: the contract every `Robot` implementation must satisfy (like gymnasium's check_env)."""

from __future__ import annotations

import numpy as np

from robot.base import ActionError, NotConnectedError, Robot


def _check_obs(robot: Robot, obs: dict[str, np.ndarray]) -> None:
    for key, feat in robot.observation_features.items():
        assert key in obs, f"{robot.name}: observation lacks {key!r}"
        value = np.asarray(obs[key])
        assert value.shape == feat.shape, f"{robot.name}: {key} has shape {value.shape}, declared {feat.shape}"
        assert value.dtype == np.dtype(feat.dtype), f"{robot.name}: {key} dtype {value.dtype} != {feat.dtype}"
    assert "image" in obs and "motor" in obs, f"{robot.name}: observations need 'image' and 'motor'"
    assert np.all((obs["motor"] >= 0.0) & (obs["motor"] <= 1.0)), f"{robot.name}: motor outside [0, 1]"


def check_robot(robot: Robot, seed: int = 0) -> None:
    """Raise AssertionError naming the broken part of the contract; leaves ``robot`` disconnected."""
    try:
        robot.get_observation()
        raise AssertionError(f"{robot.name}: get_observation() before connect() must raise NotConnectedError")
    except NotConnectedError:
        pass
    with robot:
        assert robot.is_connected
        assert set(robot.action_features) == {"motor"}, f"{robot.name}: action_features must be {{'motor'}}"
        d = robot.action_dim
        _check_obs(robot, robot.get_observation())
        rng = np.random.default_rng(seed)
        for _ in range(3):
            target = rng.random(d).astype(np.float32)
            sent = robot.send_action(target)
            assert sent.shape == (d,) and sent.dtype == np.float32
            np.testing.assert_allclose(sent, np.clip(target, robot.action_low, robot.action_high), atol=1e-6)
            obs = robot.get_observation()
            _check_obs(robot, obs)
            np.testing.assert_allclose(obs["motor"], sent, atol=1e-4,
                                       err_msg=f"{robot.name}: motor after a move differs from the sent action")
        wild = np.linspace(-2.0, 3.0, d).astype(np.float32)
        sent = robot.send_action(wild)
        assert np.all(sent >= robot.action_low - 1e-6) and np.all(sent <= robot.action_high + 1e-6), \
            f"{robot.name}: send_action did not clip {wild.tolist()} to the safety limits"
        for bad in (np.full(d, np.nan, np.float32), np.zeros(d + 1, np.float32)):
            try:
                robot.send_action(bad)
                raise AssertionError(f"{robot.name}: send_action({bad.tolist()}) must raise ActionError")
            except ActionError:
                pass
    assert not robot.is_connected
