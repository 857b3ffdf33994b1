"""The PyBullet microfarm: plant bed, camera arms, Gymnasium envs, SimRobot and the dataset renderer.

Importing ``sim`` registers ``microfarm/GantryCamera-v0`` and ``microfarm/ArmCamera-v0``.
"""

import os
import sys


def _import_pybullet_quietly() -> None:
    """pybullet prints its build time on stderr when imported; keep one-line CLI errors one line."""
    if "pybullet" in sys.modules:
        return
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        import pybullet  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_import_pybullet_quietly()

from sim.envs import ENV_IDS, register_envs  # noqa: E402

register_envs()

__all__ = ["ENV_IDS", "register_envs"]
