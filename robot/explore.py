"""The curiosity loop of Schillaci et al. 2020 over the ``Robot`` interface: ``run(ExploreConfig) -> run dir``.

Each iteration: pick a goal (interest), command = inverse(goal) + N(0, noise) (or a uniform random command:
with probability ``random_prob``, while the memory fills, and always with ``--goals random``), move, encode
what the camera saw (the frozen autoencoder), offer the sample(s) to the episodic memory, fit forward and
inverse models on memory + the last ``recent`` samples, then update the goal's interest with the prediction
error PE = ||goal - forward(command)||.

Metrics (``metrics.csv``, every ``log_every`` iterations): forward / inverse MSE on a fixed held-out test set
(``test_size`` positions drawn with ``test_seed``, the same for every run), the convex-hull area (volume for
D > 2) of the explored positions, goal, each goal's interest, memory stats, and forgetting.

Forgetting: the motor square is cut into 4 regions (quadrants of the first two axes). A region is *left*
when no sample has fallen in it for ``forget_window`` iterations. For a left region, forgetting = its test
positions' forward MSE now minus that MSE at the last log while it was still visited; ``forgetting`` in the
CSV is the mean over left regions (0 if none), ``regions_left`` their number, ``fwd_mse_r0..r3`` the
per-region errors. The summary reports the mean and max of forgetting over the run.

The forgetting probe (``--leave-region R --leave-at T``): after iteration T no command goes into quadrant R
(random commands are redrawn, inverse-model commands moved to the nearest point outside it, path frames
inside it are not learned), so exploration has *left* R; then ``forgetting`` = R's forward test MSE now minus
its mean over the logs of the last 100 iterations up to T (``LEAVE_BASELINE``), and 0 up to T.
"""

from __future__ import annotations

import dataclasses
import functools
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from tqdm import tqdm

from microfarm_toolkit import UsageError, next_run_dir
from models.autoencoder import AutoencoderConfig, ConvAutoencoder
from models.weights import WeightsError, load_into, read_metadata
from robot.base import Robot
from robot.conditions import COLUMNS, ConditionMeter, check_conditions, robot_kwargs
from robot.explore_parallel import PROCESS_MIN_STEPS, FrameEncoder, LoopMode, ModeChooser, start_prefix
from robot.explore_setup import setup_state
from robot.explore_state import Interrupt, Tracker, leave_region_command, load_checkpoint, region_of, save_checkpoint
from robot.interest import make_interest
from robot.memory import EpisodicMemory
from robot.online import OnlineModels, TrainingDivergedError
from robot.online_monitor import veca_columns

__all__ = ["ExploreConfig", "run", "default_encoder_path", "load_encoder", "TrainingDivergedError",
           "validate_config"]

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "models" / "weights"


def _f(default: Any, help: str) -> Any:
    return dataclasses.field(default=default, metadata={"help": help})


@dataclasses.dataclass
class ExploreConfig:
    """Curiosity-driven exploration (Schillaci et al. 2020); defaults are the paper preset on the gantry."""

    arm: Literal["gantry", "arm"] = _f("gantry", "camera arm")
    steps: int = _f(5000, "iterations (moves)")
    seed: int = _f(0, "seed of every random choice of the run")
    goals: Literal["som", "kmeans", "dataset", "random"] = _f("som", "goal source; random = random commands")
    n_goals: int = _f(9, "number of goals (som: a rows x cols grid, 9 = 3x3)")
    interest: Literal["lp", "slope", "random"] = _f("lp", "interest: learning progress, PE slope, or none")
    selection: Literal["greedy", "softmax"] = _f("greedy", "goal choice: argmax w.p. --greedy-prob, or softmax")
    greedy_prob: float = _f(0.85, "probability of taking the most interesting goal")
    temperature: float = _f(0.1, "softmax temperature")
    lp_decay: float = _f(0.9, "interest decay per update")
    lp_floor: float = _f(0.01, "interest below this becomes 0")
    slope_window: int = _f(10, "PEs per goal in the slope window")
    memory_size: int = _f(320, "episodic memory capacity (0 = none)")
    memory_prob: float = _f(0.1, "probability that a new sample replaces one once the memory is full")
    memory_policy: Literal["random", "lowest_lp", "highest_lp", "reservoir"] = _f("random", "replacement")
    noise: float = _f(0.02, "std of the Gaussian noise added to inverse(goal), normalised units")
    random_prob: float = _f(0.3, "fraction of uniformly random commands")
    recent: int = _f(16, "last samples added to every fit")
    epochs: int = _f(2, "epochs per online fit")
    batch_size: int = _f(16, "batch size of the online fit")
    lr: float = _f(0.0014, "SGD learning rate")
    momentum: float = _f(0.8, "SGD (Nesterov) momentum")
    hidden: list[int] = dataclasses.field(default_factory=lambda: [320, 320],
                                          metadata={"help": "hidden layer sizes of both MLPs"})
    test_size: int = _f(64, "held-out test positions (>= 50)")
    test_seed: int = _f(1234, "seed of the test positions (shared by all runs)")
    goal_samples: int = _f(200, "random views whose codes the goals are built from (without --dataset)")
    dataset: Path | None = _f(None, "features dataset (microfarm render --task features) for the goals")
    encoder: Path | None = _f(None, "encoder weights (default models/weights/encoder.safetensors)")
    path_frames: bool = _f(False, "also learn from the frames along each move's path")
    forget_window: int = _f(200, "iterations without a visit after which a region counts as left")
    leave_region: int = _f(-1, "forgetting probe: quadrant 0-3 that exploration leaves after --leave-at (-1: off)")
    leave_at: int = _f(0, "forgetting probe: last iteration that may visit --leave-region")
    distractor: str = _f("", "distractor region x0,y0,x1,y1 (bed fractions): leaves in the wind there ('': none)")
    unreachable_share: float = _f(0.0, "share of the goals built from views the camera cannot reach")
    unreachable_views: Literal["bed", "height"] = _f("bed", "unreachable views: another bed, or from 0.65 m")
    init_candidates: int = _f(1, "initialisations of the online MLPs to draw; keep the best by --init-criterion")
    init_criterion: Literal["curvature", "loss"] = _f("curvature", "highest Tr(H)/||H|| or lowest initial loss")
    edm_weight: float = _f(0.0, "weight of the EDM decorrelation penalty on the MLPs' hidden layers (0: off)")
    edm_groups: int = _f(4, "EDM groups per hidden layer (must divide every --hidden size)")
    veca_every: int = _f(10, "log VECA of the MLPs' hidden layers on their training set every N iterations (0: off)")
    log_every: int = _f(1, "log metrics every k iterations")
    checkpoint_every: int = _f(500, "write checkpoint/ every N iterations")
    threads: int = _f(1, "torch threads (more only on an idle machine: oversubscribed, 2 ran 8x slower)")
    parallel: Literal["auto", "process", "thread", "off"] = _f(
        "auto", "fit forward and inverse model at once, the inverse in a child process (process) or a thread "
        "(thread), and encode in two threads (same results, bit for bit; keep --threads 1); off: sequential; "
        "auto: whichever of off and the parallel loop measures faster during the run (process for runs of "
        f">= {PROCESS_MIN_STEPS} iterations, else thread; off with --threads > 1)")
    robot: str = _f("sim", "robot name in robot.registry")
    out: Path | None = _f(None, "output folder (default runs/explore/<N>)")
    resume: Path | None = _f(None, "continue the run in this folder from its checkpoint")
    export: bool = _f(True, "write export/ (ONNX models + manifest.json) at the end")
    plots: bool = _f(True, "write plots/ at the end")
    progress: bool = _f(True, "show a progress bar")
    gui: bool = _f(False, "PyBullet GUI (needs a display)")


def default_encoder_path(arm: str) -> Path:
    """The shipped encoder: one autoencoder trained on views of the default bed from both arms."""
    return WEIGHTS_DIR / "encoder.safetensors"


def load_encoder(path: Path, arm: str = "gantry") -> ConvAutoencoder:
    """The autoencoder saved at ``path`` (config from its metadata); a clear ``UsageError`` if unusable."""
    how = (f"produce it with `microfarm render --task features --arm {arm} --n 1000 --out data/features_{arm}` "
           f"then `microfarm train-encoder --data data/features_{arm} --weights {path}` (see README), "
           "or pass --encoder FILE")
    if not Path(path).is_file():
        raise UsageError(f"no encoder weights at {str(path)!r}; {how}")
    try:
        cfg = AutoencoderConfig.from_dict(read_metadata(path)["config"])
        ae = ConvAutoencoder(cfg)
        load_into(ae, path, kind="autoencoder")
    except (WeightsError, KeyError, ValueError) as e:
        raise UsageError(f"encoder weights {str(path)!r} are unusable ({e}); {how}") from None
    return ae.eval()


def validate_config(cfg: ExploreConfig) -> None:
    """A one-line ``UsageError`` for the first bad value of ``cfg`` (``microfarm explore`` and ``compare``)."""
    checks = [(cfg.steps >= 1, "--steps must be >= 1"), (cfg.n_goals >= 1, "--n-goals must be >= 1"),
              (cfg.test_size >= 50, "--test-size must be >= 50"), (cfg.memory_size >= 0, "--memory-size >= 0"),
              (0 <= cfg.memory_prob <= 1, "--memory-prob must be in [0, 1]"),
              (0 <= cfg.random_prob <= 1, "--random-prob must be in [0, 1]"),
              (cfg.batch_size >= 1 and cfg.epochs >= 1, "--batch-size and --epochs must be >= 1"),
              (cfg.log_every >= 1 and cfg.checkpoint_every >= 1, "--log-every/--checkpoint-every >= 1"),
              (bool(cfg.hidden), "--hidden needs at least one layer"),
              (-1 <= cfg.leave_region <= 3, "--leave-region must be a quadrant 0-3 (or -1: no probe)"),
              (cfg.init_candidates >= 1, "--init-candidates must be >= 1"),
              (cfg.edm_weight >= 0, "--edm-weight must be >= 0"), (cfg.veca_every >= 0, "--veca-every must be >= 0"),
              (cfg.edm_weight == 0 or (cfg.edm_groups >= 2 and all(h % cfg.edm_groups == 0 for h in cfg.hidden)),
               f"--edm-groups must be >= 2 and divide every --hidden size {list(cfg.hidden)}"),
              (cfg.init_candidates == 1 or cfg.dataset is None,
               "--init-candidates > 1 scores initialisations on the goal views, which --dataset does not have; "
               "drop one of them"),
              (cfg.leave_region < 0 or 0 < cfg.leave_at < cfg.steps,
               "--leave-at must be between 1 and --steps - 1 when --leave-region is set")]
    for ok, msg in checks:
        if not ok:
            raise UsageError(msg)
    check_conditions(cfg)


def run(cfg: ExploreConfig, robot: Robot | None = None) -> Path:
    """Run (or resume) an exploration; returns the run folder. ``robot``: a connected or unconnected Robot
    (default ``make_robot(cfg.robot, arm=cfg.arm, ...)``)."""
    validate_config(cfg)
    resume = cfg.resume
    ckpt = load_checkpoint(Path(resume)) if resume is not None else None
    out = Path(resume) if resume is not None else next_run_dir("explore", cfg.out)
    torch.set_num_threads(max(1, cfg.threads))
    ae = load_encoder(Path(cfg.encoder) if cfg.encoder else default_encoder_path(cfg.arm), cfg.arm)
    if robot is None:
        from robot.registry import make_robot

        robot = make_robot(cfg.robot, arm=cfg.arm, size=ae.cfg.size, seed=cfg.seed, path_frames=cfg.path_frames,
                           gui=cfg.gui, **robot_kwargs(cfg))
    robot.connect()
    try:
        return _run(cfg, robot, ae, out, ckpt)
    finally:
        robot.disconnect()


def _run(cfg: ExploreConfig, robot: Robot, ae: ConvAutoencoder, out: Path, ckpt: dict[str, Any] | None) -> Path:
    D, C = robot.action_dim, ae.cfg.code_size
    lo, hi = robot.action_low, robot.action_high
    st = setup_state(cfg, robot, ae) if ckpt is None else ckpt["state"]
    models = OnlineModels(D, C, tuple(cfg.hidden), cfg.lr, cfg.momentum, seed=int(st.get("init_seed", cfg.seed)),
                          edm_weight=cfg.edm_weight, edm_groups=cfg.edm_groups)
    start = int(st["iteration"])
    loop = LoopMode(models, cfg.parallel, cfg.threads, cfg.steps - start, start + 1, ModeChooser,  # same bits
                    settle=cfg.memory_size + 1)
    encode = FrameEncoder(ae, loop.pool)  # == ae.encode_images (bit for bit), faster
    memory = EpisodicMemory(cfg.memory_size, cfg.memory_prob, cfg.memory_policy, D, C)
    interest = make_interest(cfg.interest, cfg.n_goals, selection=cfg.selection, greedy_prob=cfg.greedy_prob,
                             temperature=cfg.temperature, decay=cfg.lp_decay, floor=cfg.lp_floor,
                             window=cfg.slope_window)
    veca_cols = veca_columns(len(cfg.hidden)) if cfg.veca_every else ()
    tracker = Tracker(D, cfg.n_goals, st["test_motor"], cfg.forget_window, cfg.leave_region, cfg.leave_at,
                      extra_columns=COLUMNS + veca_cols)
    n_test = len(st["test_motor"])  # checkpoints written before these measures existed lack their masks
    meter = ConditionMeter(st.get("test_learnable", np.ones(n_test, bool)),
                           st.get("goal_unreachable", np.zeros(cfg.n_goals, bool)),
                           st.get("cell_learnable", np.ones(ConditionMeter.cell_centres(D).shape[0], bool)))
    recent_m, recent_c = np.zeros((0, D), np.float32), np.zeros((0, C), np.float32)
    if ckpt is not None:
        models.load_state_dict(ckpt["models"])
        memory.load_state_dict(ckpt["memory"])
        interest.load_state_dict(ckpt["interest"])
        tracker.load_state_dict(ckpt["tracker"])
        if "conditions" in ckpt:
            meter.load_state_dict(ckpt["conditions"])
        recent_m, recent_c = ckpt["recent_motor"], ckpt["recent_code"]
        robot.send_action(ckpt["position"])
        robot.load_state_dict(ckpt.get("robot", {}))  # after the move back: its frame drew from them too
    rng = np.random.default_rng()
    rng.bit_generator.state = st["rng"]
    goals, t0 = st["goals"], time.perf_counter() - float(st["elapsed"])
    tracker.open_csv(out / "metrics.csv", keep_until=start)
    position = robot.get_observation()["motor"]

    def snapshot(t: int) -> dict[str, Any]:
        return {"state": {**st, "iteration": t, "elapsed": time.perf_counter() - t0, "rng": rng.bit_generator.state},
                "models": models.state_dict(), "memory": memory.state_dict(), "interest": interest.state_dict(),
                "tracker": tracker.state_dict(), "conditions": meter.state_dict(), "recent_motor": recent_m,
                "recent_code": recent_c, "position": position, "robot": robot.state_dict(),
                "config": dataclasses.asdict(cfg)}

    def after_fit(goal: int, sent: np.ndarray, motors: np.ndarray, t: int, random_cmd: bool) -> None:
        """Once the forward model is fitted: the goal's interest from its PE, the explored positions, the counts."""
        interest.update(goal, float(np.linalg.norm(goals[goal] - models.predict_code(sent)[0])))
        tracker.add_positions(motors, t)
        meter.add_move(motors, bool((getattr(robot, "last_info", None) or {}).get("in_distractor", False)), goal,
                       not random_cmd)

    bar = tqdm(range(start + 1, cfg.steps + 1), initial=start, total=cfg.steps, disable=not cfg.progress,
               desc="explore", unit="it", dynamic_ncols=True)
    with Interrupt() as stop, models:  # models: stops the worker thread and the child process
        for t in bar:
            t_it = time.perf_counter()
            loop.begin(t, encode)  # this iteration's mode
            goal = interest.select(rng)
            random_cmd = cfg.goals == "random" or not memory.full or rng.random() < cfg.random_prob
            leaving = cfg.leave_region if cfg.leave_region >= 0 and t > cfg.leave_at else -1
            if random_cmd:
                cmd = rng.uniform(lo, hi).astype(np.float32)
                while leaving >= 0 and region_of(cmd)[0] == leaving:
                    cmd = rng.uniform(lo, hi).astype(np.float32)
            else:
                cmd = models.predict_motor(goals[goal])[0] + rng.normal(0.0, cfg.noise, D)
                cmd = leave_region_command(np.clip(cmd, lo, hi), leaving)
            if not cfg.path_frames:  # one sample per move: the fit process may start the next fit meanwhile
                start_prefix(models, memory, recent_m, recent_c, rng, float(interest.values[goal]), t, cfg.recent,
                             cfg.epochs, cfg.batch_size)
            sent = robot.send_action(cmd)
            models.halt_speculation()  # the encoder's split needs the other core
            obs = list(getattr(robot, "path_observations", None) or []) if cfg.path_frames else []
            obs = obs or [robot.get_observation()]
            if leaving >= 0:  # nothing is learned inside the left region (path frames may cross it)
                obs = [o for o in obs if region_of(o["motor"])[0] != leaving] or [robot.get_observation()]
            motors = np.stack([o["motor"] for o in obs]).astype(np.float32)
            codes = encode(np.stack([o["image"] for o in obs]))
            position = motors[-1]
            lp = float(interest.values[goal])
            for m, c in zip(motors, codes, strict=True):
                memory.offer(m, c, rng, lp=lp, step=t)
            recent_m = np.concatenate([recent_m, motors])[-cfg.recent:] if cfg.recent else recent_m[:0]
            recent_c = np.concatenate([recent_c, codes])[-cfg.recent:] if cfg.recent else recent_c[:0]
            mem_m, mem_c = memory.data()
            log_now, errs = t % cfg.log_every == 0 or t == cfg.steps, None
            fit_m, fit_c = np.concatenate([mem_m, recent_m]), np.concatenate([mem_c, recent_c])
            then = functools.partial(after_fit, goal, sent, motors, t, random_cmd)  # while the inverse fit goes on
            models.veca_next = bool(veca_cols) and log_now and t % cfg.veca_every == 0  # each side after its fit
            try:  # the test-set errors of the fitted models come with the fit (where each was fitted)
                if log_now:
                    losses, errs = models.fit_test(fit_m, fit_c, rng, cfg.epochs, cfg.batch_size, st["test_motor"],
                                                   st["test_code"], then)
                else:
                    losses = models.fit(fit_m, fit_c, rng, cfg.epochs, cfg.batch_size, then)
            except TrainingDivergedError as e:
                good = out / "checkpoint"
                keep = f"the last good checkpoint is {str(good)!r}" if good.exists() else "no checkpoint was written"
                raise TrainingDivergedError(f"iteration {t}: {e}; stopped, {keep}") from None
            if errs is not None:
                veca = models.last_veca or dict.fromkeys(veca_cols, float("nan"))
                row = tracker.log(t, errs, goal, random_cmd, interest.values, losses, memory.stats(t),
                                  time.perf_counter() - t0, extra={**meter.row(errs), **veca})
                bar.set_postfix(fwd=f"{row['fwd_mse']:.3g}", inv=f"{row['inv_mse']:.3g}", refresh=False)
            if t % cfg.checkpoint_every == 0 or stop.flag:
                save_checkpoint(out / "checkpoint", snapshot(t))
            else:
                loop.chooser.record(t, time.perf_counter() - t_it)
            if stop.flag:
                bar.close()
                tracker.close()
                print(f"interrupted at iteration {t}; resume with --resume {out}")
                raise KeyboardInterrupt
    bar.close()
    tracker.close()
    wall = time.perf_counter() - t0
    save_checkpoint(out / "checkpoint", snapshot(cfg.steps))
    from robot.plots import finish_run

    finish_run(out, cfg, robot, ae, models, st, tracker, wall)
    return out
