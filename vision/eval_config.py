"""The config of `microfarm eval-segmenter` (``vision.evaluate``): its flags and their checks (one-line
``UsageError`` before anything is loaded or written), and the plan of rows they ask for (``EvalPlan``)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from microfarm_toolkit import UsageError
from models.flags import ColourPriorFlags, CRFFlags, CRFGateFlags, ScaleFlags
from vision.eval_report import BASELINES

__all__ = ["EvalConfig", "EvalPlan", "DEFAULT_WEIGHTS", "crf_methods"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "segmenter.safetensors"


@dataclasses.dataclass
class EvalConfig(ColourPriorFlags, CRFFlags, CRFGateFlags, ScaleFlags):
    """Evaluate the few-shot segmenter on held-out class folds (class-wise mIoU, FB-IoU)."""

    data: Path | None = dataclasses.field(default=None, metadata={
        "help": "rendered segmentation dataset (`microfarm render --task segmentation`; required)"})
    weights: Path | None = dataclasses.field(default=None, metadata={
        "help": f"segmenter weights (default: the shipped {DEFAULT_WEIGHTS.name})"})
    out: Path | None = dataclasses.field(default=None, metadata={
        "help": "output folder (default runs/eval-segmenter/<N>)"})
    fold: list[int] = dataclasses.field(default_factory=list, metadata={
        "help": "held-out fold(s) to evaluate (default: the fold the weights were trained without)"})
    shots: list[int] = dataclasses.field(default_factory=list, metadata={"help": "shot counts (default 1 and 5)"})
    episodes: int = dataclasses.field(default=1000, metadata={"help": "episodes per fold and shot count"})
    crf: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "CRF to score besides the network alone: dense or meanfield; 'off' for none (default: both)"})
    crf_episodes: int = dataclasses.field(default=0, metadata={
        "help": "score the CRFs on the first N episodes only (0: all); the table says so"})
    baselines: bool = dataclasses.field(default=True, metadata={"help": "also score the two baselines"})
    absent: bool = dataclasses.field(default=True, metadata={
        "help": "also run every method on a frame WITHOUT the episode's class (same support) and report how much "
                "of it is marked"})
    imgsz: int = dataclasses.field(default=256, metadata={"help": "network input side in pixels"})
    min_pixels: int = dataclasses.field(default=64, metadata={"help": "min class pixels for a frame to be used"})
    seed: int = dataclasses.field(default=12345, metadata={"help": "episode seed (same episodes for every method)"})
    examples: int = dataclasses.field(default=6, metadata={"help": "rows of the examples.png grid (0: none)"})
    device: str = dataclasses.field(default="cpu", metadata={"help": "torch device: cpu or cuda"})
    threads: int = dataclasses.field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})
    crf_gate: bool = dataclasses.field(default=True, metadata={
        "help": "also score the predictors' pipeline with each CRF behind the CRF gate (rows *_gated: the CRF kept "
                "for an episode only if it does not lower the IoU on its support images)"})
    merge: list[Path] = dataclasses.field(default_factory=list, metadata={
        "help": "instead of evaluating: join the results of these eval-segmenter runs (repeatable; one per "
                "held-out fold, each with its own weights) into one table with the mean over folds"})

    def validate(self) -> None:
        self.crf_params()
        self.check_colour_prior()
        if self.merge:
            return
        if self.data is None:
            raise UsageError("--data is required: a folder written by `microfarm render --task segmentation`")
        if self.episodes < 1:
            raise UsageError(f"--episodes must be at least 1, got {self.episodes}")
        bad = [k for k in self.shots if not 1 <= k <= 20]
        if bad:
            raise UsageError(f"--shots must be in 1..20, got {bad}")
        bad = [f for f in self.fold if not 0 <= f <= 3]
        if bad:
            raise UsageError(f"--fold must be 0..3, got {bad}")
        bad = [c for c in self.crf if c not in ("dense", "meanfield", "off")]
        if bad:
            raise UsageError(f"--crf {bad[0]!r} is not valid; choose dense, meanfield or off")
        if self.crf_episodes < 0 or self.examples < 0 or self.threads < 0:
            raise UsageError("--crf-episodes, --examples and --threads must be >= 0")
        if not 16 <= self.imgsz <= 2048:
            raise UsageError(f"--imgsz must be in 16..2048, got {self.imgsz}")
        self.check_scales(self.imgsz)
        if self.device not in ("cpu", "cuda"):
            raise UsageError(f"--device {self.device!r} is not valid; choose cpu or cuda")


def crf_methods(cfg: EvalConfig) -> list[str]:
    """The CRFs to score (``--crf``; default both, ``off`` none), in the order given."""
    if "off" in cfg.crf:
        return []
    return list(dict.fromkeys(cfg.crf)) if cfg.crf else ["dense", "meanfield"]


@dataclasses.dataclass
class EvalPlan:
    """The rows (methods) an evaluation scores, from its flags, with what the scoring needs to know about them."""

    crfs: list[str]  # the CRFs scored (``--crf``)
    weight: float  # the colour prior's weight (``--colour-prior``); rows ``colour*`` if > 0
    pipeline: str  # the predictors' pipeline, whose CRF the gate decides on: "colour_" or ""
    uncrf: str  # that pipeline without a CRF
    gated: list[str]  # the gated rows
    methods: list[str]  # every row, in the table's order
    crf_n: int  # the CRF rows score the first crf_n episodes
    hist_key: str  # the row the colour histogram's time counts for

    @property
    def colour(self) -> bool:
        return self.weight > 0

    @classmethod
    def of(cls, cfg: EvalConfig) -> EvalPlan:
        crfs = crf_methods(cfg)
        weight = cfg.check_colour_prior()
        colour = weight > 0
        pipeline = "colour_" if colour else ""
        gated = [f"{pipeline}{c}_gated" for c in crfs] if cfg.crf_gate else []
        methods = ["none", *(["colour"] if colour else []), *crfs, *(f"colour_{c}" for c in crfs if colour), *gated,
                   *(BASELINES if cfg.baselines else ())]
        crf_n = cfg.crf_episodes or cfg.episodes
        if crfs and crf_n < cfg.episodes:  # the network alone on the CRF's episodes: the CRF's gain is against it
            methods[1 + colour:1 + colour] = ["none_subset", *(["colour_subset"] if colour else [])]
        return cls(crfs, weight, pipeline, "colour" if colour else "none", gated, methods, crf_n,
                   "histogram" if cfg.baselines else "colour")  # the histogram's time counts for both that use it
