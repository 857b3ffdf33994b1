"""The settings of `microfarm eval-real` (``EvalRealConfig``, its flags and their checks) and the protocol's
constants: the methods scored, the most shots, which split the queries and supports come from."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from microfarm_toolkit import UsageError
from models.flags import ColourPriorFlags, CRFFlags, CRFGateFlags
from vision.adapt_flags import AdaptFlags
from vision.real_data import REAL_SETS

__all__ = ["EvalRealConfig", "DEFAULT_WEIGHTS", "METHODS", "ADAPTED", "GRID", "MAX_SHOTS", "SPLITS"]

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[1] / "models" / "weights" / "segmenter.safetensors"
METHODS = ("network", "pipeline", "exg_otsu", "exg_chromatic", "colour_hist")
ADAPTED = ("network_adapted", "pipeline_adapted")  # with --adapt / --adapt-steps: the same after adaptation
GRID = ("network", "pipeline", "exg_otsu")  # the predictions shown in examples_<set>.png
MAX_SHOTS = 5
# which split the query and the supports come from, per set
SPLITS = {"peanut": ("query", "support"), "cwf788": ("test", "test")}


@dataclasses.dataclass
class EvalRealConfig(ColourPriorFlags, CRFFlags, CRFGateFlags, AdaptFlags):
    """Evaluate the few-shot segmenter on real field photographs (Peanut, CWF-788): IoU per set x task x shots."""

    set: Literal["all", "peanut", "cwf788"] = dataclasses.field(default="all", metadata={
        "help": "which real set: peanut, cwf788 or all"})
    task: list[str] = dataclasses.field(default_factory=list, metadata={
        "help": "task(s) to score: vegetation, crop, weed (default: every task of each set; a task a set lacks is "
                "skipped for it)"})
    shots: list[int] = dataclasses.field(default_factory=list, metadata={"help": "shot counts, 1..5 (default 1 and 5)"})
    episodes: int = dataclasses.field(default=100, metadata={"help": "episodes per set x task x shot count"})
    weights: Path | None = dataclasses.field(default=None, metadata={
        "help": f"segmenter weights (default: the shipped {DEFAULT_WEIGHTS.name})"})
    imgsz: int = dataclasses.field(default=256, metadata={"help": "network input side in pixels"})
    max_side: int = dataclasses.field(default=512, metadata={
        "help": "photos and masks are scored with their long side shrunk to this many pixels"})
    crf: Literal["meanfield", "dense", "none"] = dataclasses.field(default="meanfield", metadata={
        "help": "the pipeline's CRF (as `microfarm segment --crf`): meanfield, dense or none"})
    min_pixels: int = dataclasses.field(default=200, metadata={
        "help": "a photo counts for a task (as query or support) when it holds this many of its class's pixels at "
                "--max-side"})
    seed: int = dataclasses.field(default=0, metadata={"help": "episode seed (the same episodes for every method)"})
    threads: int = dataclasses.field(default=0, metadata={"help": "torch CPU threads (0: torch's default)"})
    device: Literal["cpu", "cuda"] = dataclasses.field(default="cpu", metadata={"help": "torch device"})
    examples: int = dataclasses.field(default=4, metadata={
        "help": "example rows per set x task in examples_<set>.png (0: no PNG)"})
    real_root: Path | None = dataclasses.field(default=None, metadata={
        "help": "folder holding peanut/ and cwf788/ (default: $MICROFARM_REAL_DATA, else ../shared/data/real "
                "beside the repository)"})
    out: Path | None = dataclasses.field(default=None, metadata={"help": "output folder (default runs/eval-real/<N>)"})
    progress: bool = dataclasses.field(default=True, metadata={"help": "show a progress bar"})

    def validate(self) -> None:
        """One-line ``UsageError`` for a bad value (before anything is read or written)."""
        self.crf_params()
        self.check_colour_prior()
        self.check_adapt()
        if self.save_adapted is not None:
            raise UsageError("--save-adapted belongs to `microfarm segment`; eval-real adapts a copy per episode")
        if self.episodes < 1:
            raise UsageError(f"--episodes must be at least 1, got {self.episodes}")
        bad = [k for k in self.shots if not 1 <= k <= MAX_SHOTS]
        if bad:
            raise UsageError(f"--shots must be in 1..{MAX_SHOTS}, got {bad[0]}")
        if self.max_side < 32:
            raise UsageError(f"--max-side must be at least 32, got {self.max_side}")
        if not 16 <= self.imgsz <= 2048:
            raise UsageError(f"--imgsz must be in 16..2048, got {self.imgsz}")
        if self.min_pixels < 1:
            raise UsageError(f"--min-pixels must be at least 1, got {self.min_pixels}")
        if self.examples < 0 or self.threads < 0:
            raise UsageError("--examples and --threads must be >= 0")
        known = sorted({t for s in self.set_names() for t in REAL_SETS[s]})
        bad_t = [t for t in self.task if t not in known]
        if bad_t:
            where = "any real set" if self.set == "all" else f"the {self.set} set"
            raise UsageError(f"--task {bad_t[0]!r} is not a task of {where}; choose from: {', '.join(known)}")

    def set_names(self) -> list[str]:
        return list(REAL_SETS) if self.set == "all" else [self.set]

    def shot_list(self) -> list[int]:
        return sorted(set(self.shots)) or [1, 5]

    def tasks_of(self, name: str) -> list[str]:
        """The tasks scored on set ``name``: those asked for that it has (all of its tasks by default)."""
        return [t for t in REAL_SETS[name] if not self.task or t in self.task]
