"""Encoding the loop's frames fast and bit-identically to ``ConvAutoencoder.encode_images``.

``FrameEncoder(ae, pool)`` runs the frozen encoder's layers itself (``ae.encoder.features``: Conv2d, ReLU,
MaxPool2d(2) per level, then ``fc``) with two exact shortcuts:

- ReLU then 2x2 max-pooling is computed as the max of the four strided sub-grids, then ReLU on the pooled
  map: max is exact and ReLU is monotone, so the values are the same bit for bit, but torch's CPU
  ``max_pool2d`` on the first level's (256, 64, 64) map costs ~5 ms of the paper encoder's ~10 ms per frame
  on one core, the strided max ~0.3 ms.
- With ``pool`` (a one-thread executor, e.g. ``OnlineModels.worker()``), a convolution is split by output
  channels when its halves have at least ``SPLIT_MIN`` channels, a multiple of 16 (oneDNN's channel block),
  and its output has at least ``SPLIT_MIN_OUT`` values per frame (smaller ones are not worth a hand-off):
  the second half runs in the worker while the caller computes the first. For the paper encoder that
  splits the first two levels (256 at 64x64: ~1.2 ms on one core, 128 at 32x32: ~3.3 ms) and keeps the third
  (128 at 16x16, ~0.5 ms) whole; the codes are bit-identical to the unsplit ones (tests/robot/
  test_loop_parallel.py checks it). Narrower convolutions are not split because oneDNN picks other kernels
  for them (a 4-channel test encoder split in 2 + 2 rounded differently, ~1e-7).

Encoders of any other layout fall back to ``ae.encode_images``.

``ModeChooser`` picks, while a run goes, whichever of the sequential and the parallel loop is faster on
this machine right now (``ExploreConfig.parallel = "auto"``, through ``LoopMode``): all compute the same bits,
so switching changes only the speed. The parallel loop is the fit process's (``robot/online_proc.py``) for runs
of at least ``PROCESS_MIN_STEPS`` iterations (its start, ~2 s, would not pay for itself in shorter ones) and the
two-thread one otherwise; with other jobs on the cores its hand-offs wait for descheduled threads or processes
(then "off" can be faster). A probe that confirms the choice doubles the gap to the next one (``ModeChooser``).

``start_prefix`` lets the fit process begin the next fit while the robot moves (``OnlineModels.speculate``).
"""

from __future__ import annotations

import copy
import multiprocessing
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from models.autoencoder import ConvAutoencoder, preprocess
from robot.memory import EpisodicMemory
from robot.online import OnlineModels

__all__ = ["FrameEncoder", "ModeChooser", "LoopMode", "start_prefix", "pool2_relu", "SPLIT_MIN", "SPLIT_MIN_OUT",
           "PROCESS_MIN_STEPS"]

PROCESS_MIN_STEPS = 300  # fewest iterations left for "auto" to start the fit's child process

SPLIT_MIN = 32  # fewest output channels per half for a convolution to be split over two threads
SPLIT_MIN_OUT = 2**17  # fewest output values (channels x height x width) per frame for a split


def pool2_relu(y: torch.Tensor) -> torch.Tensor:
    """relu(max_pool2d(y, 2)) == max_pool2d(relu(y), 2) exactly; y (N, C, H, W), H and W even -> (N, C, H/2, W/2)."""
    a = torch.maximum(y[:, :, 0::2], y[:, :, 1::2])
    return torch.maximum(a[..., 0::2], a[..., 1::2]).relu_()


def _level(x: torch.Tensor, conv: nn.Conv2d, lo: int, hi: int) -> torch.Tensor:
    """Output channels lo:hi of one encoder level (conv 3x3, ReLU, max-pool 2): x (N, Cin, H, W) ->
    (N, hi - lo, H/2, W/2)."""
    with torch.no_grad():
        bias = conv.bias[lo:hi] if conv.bias is not None else None
        y = F.conv2d(x, conv.weight[lo:hi], bias, conv.stride, conv.padding, conv.dilation, conv.groups)
        return pool2_relu(y)


class FrameEncoder:
    """Codes (N, code_size) float32 of RGB uint8 frames (N, H, W, 3) or one frame (H, W, 3), equal to
    ``ae.encode_images(frames, batch_size)`` (the same batches: a convolution's kernel may depend on them)."""

    def __init__(self, ae: ConvAutoencoder, pool: ThreadPoolExecutor | None = None, batch_size: int = 256) -> None:
        self.ae, self.pool, self.batch_size = ae, pool, int(batch_size)
        mods = list(ae.encoder.features)
        levels = [mods[i:i + 3] for i in range(0, len(mods), 3)]
        ok = len(mods) % 3 == 0 and all(
            isinstance(c, nn.Conv2d) and c.groups == 1 and isinstance(r, nn.ReLU) and isinstance(m, nn.MaxPool2d)
            and m.kernel_size in (2, (2, 2)) and m.stride in (2, (2, 2)) and m.padding in (0, (0, 0))
            and not m.ceil_mode and m.dilation in (1, (1, 1)) for c, r, m in levels)
        self.convs: list[nn.Conv2d] | None = [lv[0] for lv in levels] if ok else None

    def _features(self, x: torch.Tensor) -> torch.Tensor:
        """x (N, Cin, S, S) -> flattened features (N, F)."""
        assert self.convs is not None
        for conv in self.convs:
            half = conv.out_channels // 2
            if (self.pool is None or conv.out_channels % 32 or half < SPLIT_MIN
                    or conv.out_channels * x.shape[2] * x.shape[3] < SPLIT_MIN_OUT):
                x = _level(x, conv, 0, conv.out_channels)
                continue
            rest = self.pool.submit(_level, x, conv, half, conv.out_channels)
            x = torch.cat([_level(x, conv, 0, half), rest.result()], 1)
        return torch.flatten(x, 1)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        if self.convs is None:
            return self.ae.encode_images(images, self.batch_size)
        x = preprocess(images, self.ae.cfg.color, self.ae.cfg.size)
        with torch.no_grad():
            out = [self.ae.encoder.fc(self._features(x[i:i + self.batch_size]))
                   for i in range(0, len(x), self.batch_size)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.ae.cfg.code_size), np.float32)


class ModeChooser:
    """Which loop (parallel True / False) to run at each iteration, from the measured iteration times.

    A probe (starting at ``first``) runs ``probe`` iterations in the current choice A, ``2 * probe`` in the other
    B, ``probe`` in A again (A B B A cancels a linear drift such as the fits growing while the memory fills), then
    keeps the faster (mean time) until the next probe. The next one starts ``period`` iterations after this one
    began; each probe that keeps A doubles that gap (up to ``max_period``: a steady machine is probed less and
    less), one that switches resets it to ``period``. ``fixed`` (True or False) turns probing off.
    ``record(t, seconds)`` after each iteration; iterations not recorded (e.g. those that wrote a checkpoint) do
    not count.
    """

    def __init__(self, first: int, fixed: bool | None = None, start: bool = True, period: int = 250,
                 probe: int = 8, max_period: int = 2000) -> None:
        self.first, self.fixed, self.best = int(first), fixed, bool(start if fixed is None else fixed)
        self.base, self.period, self.probe = int(period), int(period), int(probe)
        self.max_period = max(int(max_period), self.base)
        self._times: dict[bool, list[float]] = {True: [], False: []}
        self.switches = 0

    def _slot(self, t: int) -> int:
        """Index of iteration t in the current probe (0 .. 4 * probe - 1), or -1 outside it."""
        k = t - self.first
        return k if 0 <= k < 4 * self.probe else -1

    def restart(self, first: int, start: bool = True) -> None:
        """Begin a new probe at iteration ``first`` (e.g. when the parallel loop changed), from ``start``."""
        if self.fixed is None:
            self.first, self.best, self.period = int(first), bool(start), self.base
            self._times = {True: [], False: []}

    def parallel(self, t: int) -> bool:
        """The mode of iteration t (>= first)."""
        if self.fixed is not None:
            return self.fixed
        k = self._slot(t)
        return self.best if k < 0 or k < self.probe or k >= 3 * self.probe else not self.best

    def record(self, t: int, seconds: float) -> None:
        """Iteration t took ``seconds``; at the end of a probe (or after it, if its last iteration was not
        recorded), keep the faster mode and set when the next probe starts."""
        if self.fixed is not None:
            return
        k = self._slot(t)
        if k >= 0:
            self._times[self.parallel(t)].append(float(seconds))
        if k == 4 * self.probe - 1 or (k < 0 and t >= self.first + 4 * self.probe):
            self._conclude(t)

    def _conclude(self, t: int) -> None:
        a, b = self._times[self.best], self._times[not self.best]
        if a and b:
            switch = sum(b) / len(b) < sum(a) / len(a)
            self.best, self.switches = self.best != switch, self.switches + switch
            self.period = self.base if switch else min(2 * self.period, self.max_period)
        self._times = {True: [], False: []}
        self.first += self.period
        while self.first + 4 * self.probe <= t:  # (probes that passed unrecorded)
            self.first += self.period


class LoopMode:
    """The fit mode and encoder pool of each iteration of the loop, from ``ExploreConfig.parallel``.

    "off", "thread", "process" fix the mode ("process" waits for the child process at the start; if it cannot
    start, the thread path computes the same bits); "auto" probes "off" against the parallel loop with
    ``chooser_cls`` (a ``ModeChooser``), the parallel loop being "process" for runs with at least
    ``PROCESS_MIN_STEPS`` iterations left (the child starts in the background, "thread" meanwhile; once it is
    up a new probe starts) and "thread" for shorter ones or in a process that is itself a multiprocessing child
    (e.g. a ``microfarm compare --workers N`` worker: the other runs share the cores, and a fit process each
    would add its memory); with ``threads`` > 1 auto is "off". ``settle``: the iteration from which the first
    probe of the fit process may start (the memory's size + 1: while it fills the fits are tiny and a probe then
    chose "off" for a run that the process loop does faster, filling included); the process loop runs until then.
    """

    def __init__(self, models: OnlineModels, parallel: str, threads: int, steps_left: int, first: int,
                 chooser_cls: type[ModeChooser] = ModeChooser, settle: int = 0) -> None:
        self.settle = int(settle)
        mode = {"on": "thread"}.get(parallel, parallel)  # "on": the name of "thread" before "process" existed
        fixed = {"process": True, "thread": True, "off": False}.get(mode, False if threads > 1 else None)
        self.use_proc = mode == "process" or (fixed is None and steps_left >= PROCESS_MIN_STEPS
                                              and multiprocessing.parent_process() is None)
        self.models, self.chooser = models, chooser_cls(first, fixed)
        self.par_mode = "process" if self.use_proc else "thread"
        self.pool = models.worker() if fixed is not False else None
        self._up = False
        if self.use_proc and models.start_process() and mode == "process":
            try:
                models.process_ready(wait=True)
            except BaseException:
                models.close()
                raise

    def begin(self, t: int, encode: FrameEncoder) -> None:
        """Set the mode of iteration t on the models and the encoder."""
        if self.use_proc and not self._up and self.models.process_ready():
            self._up = True
            self.chooser.restart(max(t, self.settle))  # probe the child process against off from then on
        par = self.chooser.parallel(t)
        self.models.mode = self.par_mode if par else "off"
        encode.pool = self.pool if par else None


def start_prefix(models: OnlineModels, memory: EpisodicMemory, recent_m: np.ndarray, recent_c: np.ndarray,
                 rng: np.random.Generator, lp: float, step: int, recent: int, epochs: int, batch_size: int) -> bool:
    """Before a move that yields one sample: let the fit process run the coming fit's first steps while the robot
    moves (``OnlineModels.speculate``), on that fit's data and epoch-0 permutation as they will be, drawn from
    copies of the memory and of the generator ``rng`` (the same draws in the same order as the loop's: the
    memory's offer, then the permutations) with the new sample not known yet (NaN), up to the first batch that
    holds it (or the sample it may replace). recent_m (R, D) / recent_c (R, C): the last samples before the move.
    Returns whether it started (only in mode "process" with the child up, and with 2 epochs or more)."""
    if epochs < 2 or models.mode != "process" or not models.process_ready():
        return False
    mem, r = copy.copy(memory), np.random.Generator(type(rng.bit_generator)())
    r.bit_generator.state = rng.bit_generator.state
    mem.seen += 1  # as ``offer`` counts the sample before choosing its slot (on the copy: its arrays are shared)
    slot = mem._slot(r)
    size = mem.size + (slot is not None and slot >= mem.size)
    nan_m = np.full((1, recent_m.shape[1]), np.nan, np.float32)
    nan_c = np.full((1, recent_c.shape[1]), np.nan, np.float32)
    rm = np.concatenate([recent_m, nan_m])[-recent:] if recent else recent_m[:0]
    rc = np.concatenate([recent_c, nan_c])[-recent:] if recent else recent_c[:0]
    fit_m, fit_c = np.concatenate([memory.motor[:size], rm]), np.concatenate([memory.code[:size], rc])
    if slot is not None:
        fit_m[slot], fit_c[slot] = np.nan, np.nan
    perm0 = r.permutation(len(fit_m))
    unknown = np.flatnonzero(np.isnan(fit_m[perm0, 0]))
    steps = (int(unknown[0]) if len(unknown) else len(fit_m)) // batch_size
    return models.speculate(fit_m, fit_c, perm0, steps, batch_size)
