"""`microfarm canonical SOURCE`: network symmetries removed (``models.canonical``), to compare two runs' weights.

SOURCE is an exploration run folder (its ``weights/forward.safetensors`` and ``weights/inverse.safetensors``: tanh
MLPs; the folder ``weights/`` itself works too) or one weights file (``forward_mlp``, ``inverse_mlp`` or
``guided_net``: the segmenter, whose fuse and head ReLU units are covered). For each model it prints the relative L2
distance (``models.canonical.weight_distance``) to a randomly permuted and sign-flipped / rescaled copy of itself,
before and after canonicalisation (after: ~0), and with ``--against OTHER`` the distance to OTHER's model of the
same name, before and after. ``--out FILE.safetensors`` writes the canonical weights: for a weights file, the same
kind and config (loadable as the original; ``"canonical": true`` in its extra); for a run, both MLPs in one file
(keys ``forward.layers.0.weight`` ...; kind ``canonical_mlps``, config ``{"forward": ..., "inverse": ...}``).
``canonical_report(source, cfg)`` is the command as a function (returns the distances).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np

from microfarm_toolkit import UsageError, parse_config

__all__ = ["CanonicalConfig", "canonical_report", "load_source", "cli"]

USAGE = "usage: microfarm canonical RUN_OR_WEIGHTS [--out FILE.safetensors] [--against RUN_OR_WEIGHTS] [--seed S]"
MLP_KINDS = ("forward_mlp", "inverse_mlp")


def _f(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class CanonicalConfig:
    """Canonical weights (symmetries removed) of an exploration run's MLPs or of a weights file; compare two runs."""

    out: Path | None = _f(None, "write the canonical weights to this .safetensors file")
    against: Path | None = _f(None, "another run / weights file of the same architecture: distances to it, before "
                                    "and after canonicalisation")
    seed: int = _f(0, "seed of the random permutations, flips and rescalings of the self-check")


@dataclasses.dataclass
class _Model:
    """One loaded network: the module, its weights kind, config and extra (as saved)."""

    module: Any
    kind: str
    config: dict[str, Any]
    extra: dict[str, Any]


def _load_file(path: Path) -> _Model:
    from models.guided_net import load_guided_net
    from models.mlp import MLP, MLPConfig
    from models.weights import WeightsError, load_into, read_metadata

    try:
        meta = read_metadata(path)
        if meta["kind"] == "guided_net":
            net, extra = load_guided_net(path)
            return _Model(net, "guided_net", meta["config"], extra)
        if meta["kind"] not in MLP_KINDS:
            raise UsageError(f"{str(path)!r} holds {meta['kind']!r} weights; give an exploration run or a "
                             f"{', '.join(MLP_KINDS)} or guided_net file")
        m = MLP(MLPConfig.from_dict(meta["config"]))
        load_into(m, path, kind=meta["kind"])
        return _Model(m.eval(), meta["kind"], meta["config"], meta["extra"])
    except (WeightsError, KeyError, ValueError, TypeError) as e:
        raise UsageError(f"cannot load {str(path)!r}: {e}") from None


def load_source(path: Path) -> dict[str, _Model]:
    """A run folder -> {"forward", "inverse"}; a weights file -> {its kind's short name: model}. ``UsageError`` else."""
    path = Path(path)
    if path.is_file():
        m = _load_file(path)
        return {m.kind.removesuffix("_mlp").replace("guided_net", "segmenter"): m}
    if not path.is_dir():
        raise UsageError(f"{str(path)!r} is neither an exploration run folder nor a weights file")
    wdir = path / "weights" if (path / "weights").is_dir() else path
    missing = [n for n in ("forward", "inverse") if not (wdir / f"{n}.safetensors").is_file()]
    if missing:
        raise UsageError(f"{str(path)!r} has no weights/{missing[0]}.safetensors (not a finished `microfarm explore` "
                         "run?)")
    return {n: _load_file(wdir / f"{n}.safetensors") for n in ("forward", "inverse")}


def _layers(m: _Model) -> list[Any]:
    from models.canonical import guided_layers, module_layers

    return guided_layers(m.module) if m.kind == "guided_net" else module_layers(m.module)[0]


def _canonical(m: _Model) -> Any:
    from models.canonical import canonical_guided_net, canonical_module

    return canonical_guided_net(m.module) if m.kind == "guided_net" else canonical_module(m.module)


def _symmetric_copy(m: _Model, rng: np.random.Generator) -> _Model:
    import copy

    from models.canonical import load_layers, module_linears, random_guided_symmetry, random_symmetry

    if m.kind == "guided_net":
        return dataclasses.replace(m, module=random_guided_symmetry(m.module, rng))
    out = copy.deepcopy(m.module)
    lins, act = module_linears(out)
    load_layers(lins, random_symmetry([(x.weight, x.bias) for x in lins], act, rng))
    return dataclasses.replace(m, module=out)


def _distances(a: _Model, b: _Model) -> dict[str, float]:
    from models.canonical import weight_distance

    ca, cb = dataclasses.replace(a, module=_canonical(a)), dataclasses.replace(b, module=_canonical(b))
    return {"raw": weight_distance(_layers(a), _layers(b)), "canonical": weight_distance(_layers(ca), _layers(cb))}


def canonical_report(source: Path, cfg: CanonicalConfig, log: Any = print) -> dict[str, dict[str, Any]]:
    """The command as a function: per model {"self": {"raw", "canonical"}, "against": {...} (with --against)}."""
    if cfg.out is not None and cfg.out.suffix != ".safetensors":
        raise UsageError(f"--out must name a .safetensors file, got {str(cfg.out)!r}")
    models = load_source(source)
    other = load_source(cfg.against) if cfg.against is not None else None
    if other is not None:
        for name, m in models.items():
            o = other.get(name)
            if o is None or o.kind != m.kind or o.config != m.config:
                raise UsageError(f"--against {str(cfg.against)!r} has no {name} model with the same architecture "
                                 f"as {str(source)!r} ({m.config})")
    rng = np.random.default_rng(cfg.seed)
    report: dict[str, dict[str, Any]] = {}
    for name, m in models.items():
        r = report[name] = {"self": _distances(m, _symmetric_copy(m, rng))}
        line = (f"{name}: vs a permuted/{'rescaled' if m.kind == 'guided_net' else 'flipped'} copy of itself "
                f"{r['self']['raw']:.4f} raw -> {r['self']['canonical']:.2e} canonical")
        if other is not None:
            r["against"] = _distances(m, other[name])
            line += f"; vs {cfg.against}: {r['against']['raw']:.4f} raw -> {r['against']['canonical']:.4f} canonical"
        log(line + " (relative L2 distance of the weights)")
    if cfg.out is not None:
        _write(cfg.out, source, models)
        log(f"wrote the canonical weights -> {cfg.out}")
    return report


def _write(out: Path, source: Path, models: dict[str, _Model]) -> None:
    from models.weights import save_weights

    canon = {n: _canonical(m) for n, m in models.items()}
    try:
        if len(models) == 1:
            ((n, m),) = models.items()
            save_weights(out, canon[n], m.config, kind=m.kind, extra={**m.extra, "canonical": True})
        else:
            state = {f"{n}.{k}": v for n, c in canon.items() for k, v in c.state_dict().items()}
            save_weights(out, state, {n: m.config for n, m in models.items()}, kind="canonical_mlps",
                         extra={"source": str(source), "canonical": True})
    except OSError as e:
        raise UsageError(f"cannot write {str(out)!r}: {e}") from None


def cli(argv: list[str]) -> int:
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help")):
        raise UsageError(f"give the run folder or weights file first; {USAGE}")
    source, rest = (None, argv) if argv[0] in ("-h", "--help") else (Path(argv[0]), argv[1:])
    cfg = parse_config(CanonicalConfig, rest if source is not None else argv, prog="microfarm canonical RUN_OR_WEIGHTS")
    assert source is not None
    canonical_report(source, cfg)
    return 0
