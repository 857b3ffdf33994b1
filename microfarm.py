"""The `microfarm` command line: a dispatcher over the subcommands of robot/, vision/, sim/ and models/.

``COMMANDS`` maps each subcommand to its ``module:function``, imported only when that command runs, so
``microfarm --help`` is fast and ``microfarm deploy`` never imports torch. The toolkit the commands share (typed
usage errors, config parsing, atomic writes, run folders, missing-extra messages) lives in ``microfarm_toolkit``:
the dispatcher is one of its users, not the ground floor. Its names are re-exported here for users' code and tests
(``from microfarm import UsageError, parse_config`` keeps working); no module of ours imports them from here.
"""

from __future__ import annotations

import difflib
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path

from microfarm_toolkit import (
    BASE_MODULES,
    EXTRAS,
    UsageError,
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_png,
    atomic_write_text,
    given_fields,
    missing_dependency,
    next_run_dir,
    parse_config,
    quiet_stderr,
    run_command,
)

__all__ = [
    "UsageError",
    "parse_config",
    "given_fields",
    "atomic_write_bytes",
    "atomic_write_png",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_path",
    "quiet_stderr",
    "next_run_dir",
    "EXTRAS",
    "BASE_MODULES",
    "missing_dependency",
    "run_command",
    "COMMANDS",
    "available_commands",
    "main",
]

# Subcommands: name -> ("module:function", one-line help). Imported lazily so `microfarm --help` is fast
# and `microfarm deploy` never imports torch.
COMMANDS: dict[str, tuple[str, str]] = {
    "render": ("sim.render_dataset:cli", "render a labelled dataset (features or segmentation) from the simulator"),
    "explore": ("robot.explore_cli:cli", "curiosity-driven exploration run (same as `python launch.py`)"),
    "compare": ("robot.compare:cli", "a grid of exploration conditions x seeds, with paper-style figures"),
    "train-encoder": ("robot.train_encoder:cli", "train the convolutional autoencoder on a features dataset"),
    "train-segmenter": ("vision.train:cli", "episodic few-shot training of the guided segmentation network"),
    "eval-segmenter": ("vision.evaluate:cli", "evaluate the segmenter on held-out folds (mIoU, FB-IoU)"),
    "eval-real": ("vision.eval_real:cli", "score the segmenter on real field photos (Peanut, CWF-788)"),
    "segment": ("vision.cli:cli", "few-shot segmentation of a camera feed, video, image folder or `sim`"),
    "export": ("robot.export_cli:cli", "export every model (and the CRF) to an ONNX bundle"),
    "deploy": ("robot.deploy:cli", "run an ONNX bundle on a robot without PyTorch"),
    "faults": ("robot.faults_cli:cli", "stuck-at faults of a bundle's weights: task metrics against the fault rate"),
    "canonical": ("robot.canonical_cli:cli", "canonical weights (symmetries removed) of a run; distance of two runs"),
}


def _module_present(module: str) -> bool:
    """Whether ``package.module`` exists, without importing the package (sim's import loads pybullet)."""
    import importlib.util

    top, _, sub = module.partition(".")
    spec = importlib.util.find_spec(top)
    if spec is None or not sub:
        return spec is not None
    return any((Path(loc) / (sub.replace(".", "/") + ".py")).is_file()
               for loc in spec.submodule_search_locations or [])


def available_commands() -> dict[str, tuple[str, str]]:
    """The subcommands whose module is present in this installation."""
    return {name: entry for name, entry in COMMANDS.items() if _module_present(entry[0].split(":")[0])}


def _usage() -> str:
    commands = available_commands()
    width = max(map(len, commands))
    lines = ["usage: microfarm <command> [flags]   (microfarm <command> --help for its flags)", "", "commands:"]
    lines += [f"  {name.ljust(width)}  {help_}" for name, (_, help_) in commands.items()]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    commands = available_commands()
    if name not in commands:
        close = difflib.get_close_matches(name, list(commands), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        print(f"microfarm: error: unknown command {name!r}{hint} (choose from: {', '.join(commands)})",
              file=sys.stderr)
        return 2
    module, func = commands[name][0].split(":")

    def load_and_run(args: list[str]) -> int | None:  # the import too: a missing extra is one line, exit 2
        return getattr(importlib.import_module(module), func)(args)

    return run_command(load_and_run, rest, prog=f"microfarm {name}")


if __name__ == "__main__":  # `python -m microfarm`
    sys.exit(main())
