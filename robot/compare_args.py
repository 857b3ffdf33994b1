"""`microfarm compare`'s command line: every ``ExploreConfig`` field as a flag of one value (fixed) or several (a
grid axis), parsed into a ``CompareSpec``, and the grid's conditions (``robot.compare`` runs them)."""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import os
import typing
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from microfarm_toolkit import UsageError, UsageParser, field_type, flag_converter, flag_name
from robot.compare_report import fmt_value

__all__ = ["CompareSpec", "parse_args", "conditions", "NOT_AXES", "COMPARE_DEFAULTS", "MEMORY_ONLY", "DESCRIPTION"]

DESCRIPTION = "a grid of exploration conditions x seeds, run in parallel, with paper-style figures"

NOT_AXES = ("seed", "out", "resume", "progress", "gui")
# compare's defaults where they differ from a single run's
COMPARE_DEFAULTS: dict[str, Any] = {"threads": 1, "plots": False, "export": False}
MEMORY_ONLY = ("memory_prob", "memory_policy")  # meaningless without a memory


@dataclasses.dataclass
class CompareSpec:
    axes: dict[str, list[Any]]  # field -> values (2+)
    fixed: dict[str, Any]  # field -> value
    seeds: list[int]
    workers: int
    ray: str | None
    out: Path | None
    progress: bool


def _value_converter(name: str, tp: Any) -> Callable[[str], Any]:
    inner = field_type(tp)
    if inner is bool:
        def conv_bool(s: str) -> bool:
            v = s.strip().lower()
            if v in ("true", "yes", "on", "1"):
                return True
            if v in ("false", "no", "off", "0"):
                return False
            raise UsageError(f"{flag_name(name)} expects true or false, got {s!r}")
        return conv_bool
    if get_origin(inner) is list:
        (item,) = get_args(inner) or (str,)
        one = flag_converter(name, item)

        def conv_list(s: str) -> list[Any]:
            parts = [p for p in s.replace("x", ",").split(",") if p.strip()]
            if not parts:
                raise UsageError(f"{flag_name(name)} expects comma-separated values (e.g. 320,320), got {s!r}")
            return [one(p.strip()) for p in parts]
        return conv_list
    base = flag_converter(name, tp)
    if inner is not tp:  # Optional: "none" is None
        return lambda s: None if s.strip().lower() == "none" else base(s)
    return base


def _explore_fields() -> list[tuple[dataclasses.Field[Any], Any]]:
    from robot.explore import ExploreConfig

    hints = typing.get_type_hints(ExploreConfig)
    return [(f, hints[f.name]) for f in dataclasses.fields(ExploreConfig) if f.name not in NOT_AXES]


def parse_args(argv: Sequence[str]) -> CompareSpec:
    """The grid from command-line flags; ``UsageError`` on anything wrong."""
    parser = UsageParser(prog="microfarm compare", description=DESCRIPTION,
                     usage="microfarm compare [--seeds N] [--seed-start S] [--workers W | --ray auto|ADDRESS] "
                           "[--out DIR] [--no-progress] [--<explore-flag> VALUE [VALUE ...]] ...",
                     formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False,
                     epilog="Every exploration flag takes one value (fixed) or several (a grid axis); "
                            "see `microfarm explore --help` for their meaning.")
    parser.add_argument("--seeds", type=int, default=5, help="runs (seeds) per condition (default 5)")
    parser.add_argument("--seed-start", type=int, default=0, help="first seed (default 0)")
    parser.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                        help="parallel runs in a process pool; 1 = in this process (default min(2, CPUs))")
    parser.add_argument("--ray", default=None, metavar="auto|ADDRESS",
                        help="run on a Ray cluster instead (needs the `cluster` extra)")
    parser.add_argument("--out", type=Path, default=None, help="output folder (default runs/compare/<N>)")
    parser.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True, help="progress bar")
    fields = _explore_fields()
    for f, tp in fields:
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        default = COMPARE_DEFAULTS.get(f.name, default)
        inner = field_type(tp)
        meta = "{" + ",".join(map(str, get_args(inner))) + "}" if get_origin(inner) is Literal else "V"
        parser.add_argument(flag_name(f.name), dest=f.name, nargs="+", default=None, metavar=meta,
                            help=f"{f.metadata.get('help', '')} (default {default})")
    ns, unknown = parser.parse_known_args(list(argv))
    if unknown:
        import difflib

        known = [a for act in parser._actions for a in act.option_strings]
        bad = next((u for u in unknown if u.startswith("-")), unknown[0])
        close = difflib.get_close_matches(bad.split("=", 1)[0], known, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]}?" if close else "; see `microfarm compare --help`"
        raise UsageError(f"unknown argument {bad!r}{hint}")
    if ns.seeds < 1:
        raise UsageError("--seeds must be >= 1")
    if ns.workers < 1:
        raise UsageError("--workers must be >= 1")
    axes: dict[str, list[Any]] = {}
    fixed: dict[str, Any] = {}
    for f, tp in fields:
        raw = getattr(ns, f.name)
        if raw is None:
            if f.name in COMPARE_DEFAULTS:
                fixed[f.name] = COMPARE_DEFAULTS[f.name]
            continue
        conv = _value_converter(f.name, tp)
        vals: list[Any] = []
        for s in raw:
            v = conv(s)
            if v not in vals:
                vals.append(v)
        if len(vals) == 1:
            fixed[f.name] = vals[0]
        else:
            axes[f.name] = vals
    return CompareSpec(axes=axes, fixed=fixed, seeds=list(range(ns.seed_start, ns.seed_start + ns.seeds)),
                       workers=ns.workers, ray=ns.ray, out=ns.out, progress=ns.progress)


def conditions(spec: CompareSpec) -> list[tuple[str, dict[str, Any]]]:
    """(name, axis values) per condition, in grid order; memory-0 duplicates collapsed."""
    names = list(spec.axes)
    out: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for combo in itertools.product(*(spec.axes[n] for n in names)):
        values = dict(zip(names, combo, strict=True))
        size = values.get("memory_size", spec.fixed.get("memory_size", 320))
        shown = {k: v for k, v in values.items() if not (size == 0 and k in MEMORY_ONLY)}
        name = ",".join(f"{k}={fmt_value(v)}" for k, v in shown.items()) or "default"
        if name in seen:
            continue
        seen.add(name)
        out.append((name, values))
    return out
