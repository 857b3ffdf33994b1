"""Launch a curiosity-driven exploration in the simulator (the paper preset on the gantry by default).

    python launch.py [--arm gantry|arm] [--steps N] [--seed S] [--goals som|kmeans|dataset|random]
                     [--interest lp|slope|random] [--memory-size M] [--memory-prob P] [--memory-policy ...]
                     [--out DIR] [--resume DIR] [--gui]        (python launch.py --help for every flag)
"""

from __future__ import annotations

import sys

from microfarm_toolkit import run_command
from robot.explore_cli import cli

if __name__ == "__main__":
    sys.exit(run_command(cli, sys.argv[1:], prog="launch.py"))
