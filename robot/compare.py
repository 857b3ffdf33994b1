"""`microfarm compare`: a grid of exploration conditions x seeds, run in parallel, with paper-style figures.

    microfarm compare --goals som random --memory-size 0 320 --memory-prob 0.1 0.01 --seeds 5 --steps 5000 \\
        --arm gantry --workers 2 --out runs/compare/paper

Every ``ExploreConfig`` field (but ``seed``, ``out``, ``resume``, ``progress`` and ``gui``) is a flag that takes
one or more values: one value fixes it for every run, several make it an axis of the grid (the grid is the
cartesian product of the axes). ``--hidden`` takes comma-separated sizes per value (``320,320``); booleans take
``true``/``false``. Conditions whose memory is 0 ignore ``--memory-prob`` / ``--memory-policy``, so those
duplicates are collapsed into one condition (named without them).

Each run goes to ``OUT/runs/<condition>/seed<k>/`` (``<condition>`` = ``axis=value`` pairs joined by ``,``,
``default`` without axes), seeds ``--seed-start`` .. ``--seed-start + --seeds - 1``. A re-run with the same
``--out`` skips finished runs (``summary.json`` present with the same config), resumes interrupted ones from
their checkpoint, and refuses a finished run whose config differs. Runs execute in a process pool of
``--workers`` processes (1 = in this process), or as tasks on a Ray cluster (``--ray auto|ADDRESS``, extra
``cluster``). In the compare defaults each run uses 1 torch thread and writes neither ``plots/`` nor ``export/``
(pass ``--threads``, ``--plots true``, ``--export true`` to change that).

Outputs in OUT (besides ``runs/``): ``compare.json`` (the grid), ``table.csv`` and ``table.md`` (per condition:
mean and std across seeds of the final and area-under-curve forward / inverse test MSE, final explored area,
forgetting, error rise, wall time), ``curves.csv`` (mean and std per condition and logged iteration) and
``figures/`` (``fwd_mse.png``, ``inv_mse.png``, ``area.png``, ``forgetting.png``, ``rise.png`` and all of them in
``summary.png``: mean across seeds with a +-1 std band, one line per condition).

Measures (from each run's ``metrics.csv``): *AUC* is the area under the curve divided by the iteration span
(the time-average); *forgetting* is the tracker's measure (robot.explore: with the forgetting probe
``--leave-region R --leave-at T``, the forward-error rise on R's test positions after exploration left R),
reported at the end (``forgetting_end``, and relative to R's error before: ``forgetting_rel``), as a
time-average, with the other regions' error change over the probe (``kept_change``); with a probe the error,
area and rise measures stop at T; see ``robot.compare_report._run_measures``.
*rise* is a second forgetting measure that needs no region to be left: per quadrant region, the forward test
error minus its lowest value so far, averaged over the 4 regions and over time (0 for a model that never gets
worse anywhere).
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import sys
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from pathlib import Path
from typing import Any

from microfarm_toolkit import UsageError, atomic_write_json, atomic_write_text, next_run_dir
from robot.compare_args import CompareSpec, conditions, parse_args
from robot.compare_report import CURVE_KEYS, aggregate, write_report

__all__ = ["cli", "CompareSpec", "parse_args", "conditions", "aggregate", "write_report", "CURVE_KEYS",
           "run_configs"]

_CFG_IGNORED = ("out", "resume", "progress", "threads", "plots", "export", "gui", "parallel")  # no effect on results


def _comparable(cfg: dict[str, Any]) -> dict[str, Any]:
    out = {k: (str(v) if isinstance(v, Path) else v) for k, v in cfg.items() if k not in _CFG_IGNORED}
    for k in ("encoder", "dataset"):  # relative here, absolute on Ray
        if out.get(k):
            out[k] = str(Path(out[k]).resolve())
    return out


def _make_config(spec: CompareSpec, values: dict[str, Any], seed: int, out: Path) -> Any:
    from robot.explore import ExploreConfig, validate_config

    kw = {**spec.fixed, **values, "seed": seed, "out": out, "progress": False}
    cfg = ExploreConfig(**kw)
    validate_config(cfg)
    return cfg


def _status(cfg: Any, run_dir: Path) -> str:
    """"done", "resume" or "new"; ``UsageError`` when a finished run there has another config."""
    summary = run_dir / "summary.json"
    if summary.is_file():
        try:
            old = json.loads(summary.read_text())["config"]
        except (OSError, ValueError, KeyError):
            return "new"
        want = json.loads(json.dumps(_comparable(dataclasses.asdict(cfg)), default=str))
        # a field added after that run was written has its default there
        defaults = json.loads(json.dumps(_comparable(dataclasses.asdict(type(cfg)())), default=str))
        have = {**{k: v for k, v in defaults.items() if k not in old}, **json.loads(json.dumps(_comparable(old),
                                                                                              default=str))}
        if want != have:
            diff = sorted(k for k in set(want) | set(have) if want.get(k) != have.get(k))
            raise UsageError(f"{str(run_dir)!r} holds a finished run with another config ({', '.join(diff)} "
                             "differ); pass a new --out")
        return "done"
    if (run_dir / "checkpoint" / "state.safetensors").is_file():
        return "resume"
    return "new"


def _run_one(cfg_dict: dict[str, Any], resume: bool) -> dict[str, Any]:
    """Run one exploration (in a worker); returns its summary and metrics text (for Ray without a shared FS)."""
    from robot.explore import ExploreConfig, run
    from robot.registry import register_robot, split_robot_name

    cfg = ExploreConfig(**cfg_dict)
    if ":" in cfg.robot and split_robot_name(cfg.robot)[1] is None:  # an entry point "module:Class", not "files:DIR"
        register_robot(cfg.robot, cfg.robot)
    if resume:
        cfg = dataclasses.replace(cfg, resume=cfg.out)
    out = run(cfg)
    return {"summary": (out / "summary.json").read_text(), "metrics": (out / "metrics.csv").read_text()}


def _check_encoders(cfgs: list[Any]) -> None:
    from robot.explore import default_encoder_path, load_encoder

    for path, arm in sorted({(str(c.encoder or default_encoder_path(c.arm)), c.arm) for c in cfgs}):
        load_encoder(Path(path), arm)


def _execute(jobs: list[tuple[str, Any, bool]], spec: CompareSpec) -> list[str]:
    """Run ``(label, cfg, resume)`` jobs; returns error lines of failed runs."""
    from tqdm import tqdm

    errors: list[str] = []
    bar = tqdm(total=len(jobs), disable=not spec.progress, desc="compare", unit="run", dynamic_ncols=True)

    def done(label: str, err: BaseException | None) -> None:
        if err is not None:
            msg = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            errors.append(f"{label}: {type(err).__name__}: {msg}")
        bar.set_postfix_str(label[-60:], refresh=False)
        bar.update(1)

    try:
        if spec.ray is not None:
            _execute_ray(jobs, spec, done)
        elif spec.workers == 1:
            for label, cfg, resume in jobs:
                try:
                    _run_one(dataclasses.asdict(cfg), resume)
                    done(label, None)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as e:  # noqa: BLE001  (one failed run must not stop the grid)
                    done(label, e)
        else:
            ctx = multiprocessing.get_context("spawn")  # torch + pybullet: no fork
            with ProcessPoolExecutor(max_workers=min(spec.workers, len(jobs)) or 1, mp_context=ctx) as pool:
                pending: dict[Future[dict[str, Any]], str] = {
                    pool.submit(_run_one, dataclasses.asdict(cfg), resume): label for label, cfg, resume in jobs}
                try:
                    while pending:
                        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
                        for fut in finished:
                            label = pending.pop(fut)
                            done(label, fut.exception())
                except KeyboardInterrupt:
                    for fut in pending:
                        fut.cancel()
                    raise
    finally:
        bar.close()
    return errors


def _execute_ray(jobs: list[tuple[str, Any, bool]], spec: CompareSpec,
                 done: Callable[[str, BaseException | None], None]) -> None:
    try:
        import ray
    except ImportError:
        raise UsageError("--ray needs the `ray` package, which is not installed; install the cluster extra "
                         "(pip install 'microfarm[cluster]') or run without --ray") from None
    try:
        ray.init(address=spec.ray, ignore_reinit_error=True, log_to_driver=False)
    except Exception as e:  # noqa: BLE001  (ConnectionError and Ray's own errors)
        raise UsageError(f"cannot connect to the Ray cluster at {spec.ray!r}: {e}") from None
    remote = ray.remote(_run_one)
    refs = {}
    for label, cfg, resume in jobs:  # absolute paths: a Ray worker's current folder is not ours
        cfg = dataclasses.replace(cfg, out=Path(cfg.out).resolve(), **{
            k: Path(getattr(cfg, k)).resolve() for k in ("encoder", "dataset") if getattr(cfg, k) is not None})
        ref = remote.options(num_cpus=max(1, int(cfg.threads))).remote(dataclasses.asdict(cfg), resume)
        refs[ref] = (label, cfg)
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            label, cfg = refs.pop(ref)
            try:
                res = ray.get(ref)
            except Exception as e:  # noqa: BLE001
                done(label, e)
                continue
            out = Path(cfg.out)  # without a shared filesystem the run's files stayed on its node
            for name, key in (("metrics.csv", "metrics"), ("summary.json", "summary")):
                if not (out / name).is_file():
                    atomic_write_text(out / name, res[key])
            done(label, None)


def run_configs(runs: list[tuple[str, dict[str, Any], Path]], workers: int, progress: bool = True) -> list[str]:
    """Run ``(label, ExploreConfig kwargs, run folder)`` triples the way a grid does: finished runs (same config)
    are skipped, interrupted ones resumed, the rest run in a pool of ``workers``; returns failed runs' error lines.
    The kwargs are validated first (``UsageError``); ``seed`` and ``out`` come from them and the folder."""
    from robot.explore import ExploreConfig, validate_config

    jobs: list[tuple[str, Any, bool]] = []
    for label, kw, run_dir in runs:
        cfg = ExploreConfig(**{**kw, "out": run_dir, "progress": False})
        validate_config(cfg)
        state = _status(cfg, run_dir)
        if state != "done":
            jobs.append((label, cfg, state == "resume"))
    print(f"{len(runs)} runs, {len(jobs)} to run with {workers} worker(s)", flush=True)
    spec = CompareSpec(axes={}, fixed={}, seeds=[], workers=workers, ray=None, out=None, progress=progress)
    return _execute(jobs, spec) if jobs else []


# -- command ------------------------------------------------------------------------------------------
def cli(argv: list[str]) -> int:
    """Parse the grid, run what is not finished, aggregate; 0 if every run finished, 1 if some failed."""
    spec = parse_args(argv)
    conds = conditions(spec)
    out = next_run_dir("compare", spec.out)
    jobs: list[tuple[str, Any, bool]] = []
    cfgs = []
    skipped = 0
    for name, values in conds:
        for s in spec.seeds:
            run_dir = out / "runs" / name / f"seed{s}"
            cfg = _make_config(spec, values, s, run_dir)
            cfgs.append(cfg)
            state = _status(cfg, run_dir)
            if state == "done":
                skipped += 1
            else:
                jobs.append((f"{name}/seed{s}", cfg, state == "resume"))
    if jobs:
        _check_encoders([c for _, c, _ in jobs])
    grid = {"argv": list(argv), "axes": spec.axes, "fixed": spec.fixed, "seeds": spec.seeds,
            "conditions": [{"name": n, "values": v} for n, v in conds]}
    atomic_write_json(out / "compare.json", grid)
    print(f"{len(conds)} conditions x {len(spec.seeds)} seeds = {len(cfgs)} runs; {skipped} finished already, "
          f"{len(jobs)} to run " + (f"on Ray ({spec.ray})" if spec.ray else f"with {spec.workers} worker(s)"),
          flush=True)
    t0 = time.perf_counter()
    errors = _execute(jobs, spec) if jobs else []
    agg = aggregate(out, conds, spec.seeds)
    write_report(out, agg, list(spec.axes))
    print(f"runs finished in {time.perf_counter() - t0:.0f} s; table: {out / 'table.md'}; figures: {out / 'figures'}")
    if errors:
        print(f"{len(errors)} run(s) failed (re-run the same command to retry them):", file=sys.stderr)
        for e in errors:
            print(f"  {e}", file=sys.stderr)
        return 1
    return 0
