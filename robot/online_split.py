"""The two-at-once fit of ``OnlineModels`` (its modes "thread" and "process"), as a mixin.

The forward model (index 0 of the stacked tensors) is fitted in the calling thread, the inverse (index 1) at
the same time in a worker thread (mode "thread") or in a persistent child process on shared tensors (mode
"process", ``robot/online_proc.py``). Both run ``OnlineModels._fit_one`` (the fused step on views k:k+1 of the
stacked tensors) with the same permutations, drawn from the run's generator in the fused path's order, so
every mode computes the same bits as mode "off" (the fused path). Mode "process" fits in the worker thread
until the child is up, and for good if it could not start: same bits again.

``speculate`` lets the child start the next fit while the robot moves (``FitProcess.prefix``); the fit keeps
the steps done if its permutation and samples agree with the expected ones there, else undoes them.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, wait
from typing import Any

import numpy as np
import torch

from robot.online_monitor import model_veca
from robot.online_proc import FitProcess

__all__ = ["SplitFit", "MODES", "FORWARD", "INVERSE", "BOTH"]

FORWARD, INVERSE, BOTH = 0, 1, 2  # the models' index in the stacks; BOTH: the fused path's views
MODES = ("off", "thread", "process")
SHARED = ("D", "C", "hidden", "lr", "momentum", "nesterov", "edm_weight", "edm_groups", "P", "weights", "biases",
          "bufs", "out_scale")


class SplitFit:
    """Threads and the child process of ``OnlineModels`` (which defines the attributes used here)."""

    FORWARD, INVERSE, BOTH = FORWARD, INVERSE, BOTH  # (for the child process, which imports no robot module)
    mode: str
    params: list[torch.Tensor]
    bufs: list[torch.Tensor]
    _pool: ThreadPoolExecutor | None
    _proc: FitProcess | None
    _fit_one: Any
    _model_views: Any
    model_views: Any
    _pack: Any
    _spec: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None
    prefix_stats: dict[str, int]
    veca_next: bool
    last_veca: dict[str, float] | None

    @property
    def parallel(self) -> bool:
        """Whether the two models are fitted at once (``mode`` "thread" or "process"); set a bool (True =
        "thread") or a mode of ``MODES``."""
        return self.mode != "off"

    @parallel.setter
    def parallel(self, value: bool | str) -> None:
        mode = ("thread" if value else "off") if isinstance(value, bool) else str(value)
        if mode not in MODES:
            raise ValueError(f"unknown fit mode {value!r}; choose one of: {', '.join(MODES)}")
        self.mode = mode

    def start_process(self) -> bool:
        """Start the child process of mode "process" (once; it gets ready in the background, see
        ``process_ready``), moving the stacked tensors to shared memory in place. False if it failed to start."""
        if self._proc is None:
            for t in [*self.params, *self.bufs]:
                t.share_memory_()
            self._proc = FitProcess({"cls": type(self), **{k: getattr(self, k) for k in SHARED}})
        return not self._proc.failed

    def process_ready(self, wait: bool = False) -> bool:
        """Whether the child process is up (non-blocking; ``wait``: block until it is up or has failed)."""
        p = self._proc
        return p is not None and (p.wait_ready() if wait else p.ready())

    @classmethod
    def from_shared_spec(cls, spec: dict[str, Any]) -> Any:
        """The child process's models: the (shared) tensors and settings of ``SHARED`` in ``spec``, mode "off"."""
        m = cls.__new__(cls)
        m.__dict__.update(spec, mode="off", _pool=None, _proc=None, _test=None, _test_preds=None, _spec=None,
                          veca_next=False, last_veca=None)
        m._views = m.model_views()
        return m

    def worker(self) -> ThreadPoolExecutor:
        """The one worker thread of the parallel path (started on first use, its torch ops single-threaded;
        shut down by ``close()`` or when this object is collected). Others may use it between fits."""
        if self._pool is None:
            self._pool = ThreadPoolExecutor(1, thread_name_prefix="online-fit",
                                            initializer=lambda: torch.set_num_threads(1))
            weakref.finalize(self, self._pool.shutdown, wait=False)
        return self._pool

    def close(self) -> None:
        """Stop the worker thread (a later parallel fit starts a new one) and the child process (for good: mode
        "process" then fits in the worker thread)."""
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        if self._proc is not None:
            self._proc.close()
            self._proc.failed = True

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def _ready_proc(self) -> FitProcess | None:
        p = self._proc
        return p if self.mode == "process" and p is not None and p.ready() else None

    def speculate(self, motor: np.ndarray, code: np.ndarray, perm0: np.ndarray, steps: int, batch_size: int) -> bool:
        """Mode "process" with the child up: let it run the next fit's first ``steps`` steps of epoch 0 now, on the
        samples motor (N, D) / code (N, C) and epoch-0 permutation perm0 (N,) that fit is expected to get (the
        next call must be that fit: it keeps the steps if its own agree there, else undoes them). Returns
        whether it started."""
        proc = self._ready_proc()
        if proc is None or steps < 1:
            return False
        x, y = self._pack(motor, code)
        proc.prefix(x, y, torch.from_numpy(perm0), steps, batch_size)
        self._spec = (motor, code, perm0, batch_size)
        return True

    def halt_speculation(self) -> None:
        """Stop the child's prefix (``speculate``) after its current step, e.g. to free its core for the encoder;
        the fit still keeps the steps done."""
        if self._spec is not None and self._proc is not None:
            self._proc.halt_prefix()

    def _take_prefix(self, motor: np.ndarray, code: np.ndarray, perm0: np.ndarray | None, batch_size: int) -> int:
        """The steps of a running prefix that the fit on motor (N, D) / code (N, C) with epoch-0 permutation perm0
        (N,) keeps (None: none), the prefix stopped; a prefix it cannot keep is undone."""
        if self._spec is None or self._proc is None:
            return 0
        (sm, sc, sp, sb), self._spec = self._spec, None
        motor, code = np.asarray(motor, np.float32), np.asarray(code, np.float32)
        done = self._proc.stop_prefix()
        end = done * sb
        rows = None if perm0 is None else perm0[:end]
        keep = (rows is not None and sb == batch_size and len(rows) == end and np.array_equal(rows, sp[:end])
                and np.array_equal(motor[rows], sm[rows]) and np.array_equal(code[rows], sc[rows]))
        if done and not keep:
            self._proc.restore()
        self.prefix_stats["kept" if keep and done else "undone" if done else "empty"] += 1
        self.prefix_stats["steps"] += done if keep else 0
        return done if keep else 0

    def _inverse(self, x: torch.Tensor, y: torch.Tensor, perms: list[torch.Tensor], batch_size: int,
                 tx: torch.Tensor | None, skip: int, code: np.ndarray | None
                 ) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, float] | None]:
        """The worker thread's part: ``_fit_one(1, ...)``, then (given code) the inverse model's VECA on it."""
        acc, pred = self._fit_one(INVERSE, x, y, perms, batch_size, tx, skip)
        return acc, pred, (None if code is None else model_veca(self, 1, code))

    def _fit_split(self, motor: np.ndarray, code: np.ndarray, x: torch.Tensor, y: torch.Tensor,
                   tx: torch.Tensor | None, rng: np.random.Generator, epochs: int, batch_size: int,
                   then: Callable[[], None] | None = None
                   ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor] | None]:
        """Both models at once on motor (N, D) / code (N, C), packed x (2, N, P) / y (2, N, P); returns the last
        epoch's summed squared errors (2,) and, given packed test inputs tx (2, M, P), the fitted models' outputs
        on them, forward (1, M, P) and inverse (1, M, P). ``then()`` runs after the forward model's fit, while
        the inverse one may go on. With ``veca_next`` each side computes its fitted model's VECA on its own
        inputs right after its fit (``last_veca``): the inverse model's in the child process or worker thread."""
        n = x.shape[1]
        perms = [torch.from_numpy(rng.permutation(n)) for _ in range(epochs)]  # the fused path's draws
        skip = self._take_prefix(motor, code, perms[0].numpy() if epochs > 1 else None, batch_size)
        veca = self.veca_next
        proc = self._ready_proc()
        if proc is not None:
            proc.submit(x[1], y[1], perms, batch_size, None if tx is None else tx[1], skip, veca)
            inverse = proc.result
        else:
            inv = self.worker().submit(self._inverse, x[1:], y[1:], perms, batch_size,
                                       None if tx is None else tx[1:], skip, code if veca else None)
            inverse = inv.result
        try:
            a0, p0 = self._fit_one(FORWARD, x[:1], y[:1], perms, batch_size, None if tx is None else tx[:1], skip)
            v0 = model_veca(self, 0, motor) if veca else None
            if then is not None:
                then()
        except BaseException:  # e.g. a second Ctrl-C: let the other finish before the weights are read
            if proc is not None:
                proc.drain()
            else:
                wait([inv])
            raise
        a1, p1, v1 = inverse()
        self.last_veca = {**v0, **(v1 or {})} if v0 is not None else None
        return torch.cat([a0, a1]), ((p0, p1) if p0 is not None and p1 is not None else None)
