"""The PyBullet microfarm: plant bed, camera arms, Gymnasium envs, the dataset renderer and sample frames.

Importing ``sim`` registers ``microfarm/GantryCamera-v0`` and ``microfarm/ArmCamera-v0``.
"""

from microfarm_toolkit import quiet_stderr

with quiet_stderr():  # pybullet prints its build time on stderr: keep one-line CLI errors one line
    import pybullet  # noqa: F401

from sim.envs import ENV_IDS, register_envs  # noqa: E402

register_envs()

__all__ = ["ENV_IDS", "register_envs"]
