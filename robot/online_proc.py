"""The inverse model's online fit in a persistent child process (``OnlineModels`` mode ``"process"``).

Two threads cannot fit the two models at once: each SGD step is a few small kernels (batch 16, 320x320) and
the Python between them holds the GIL, so a worker thread measured no gain. A child process has its own
interpreter. ``FitProcess`` starts one (``torch.multiprocessing``, spawn context, one torch thread, SIGINT
ignored: the parent's Ctrl-C handling decides) that gets, once, the stacked weights, biases and momentum
buffers of ``OnlineModels`` (moved to shared memory in place, so the parent's ``predict_*``, ``state_dict``,
checkpoints and export keep reading the same tensors) and shared data buffers. Per fit the parent writes the
inverse model's padded data x (N, P), y (N, P), the epoch permutations (N,) (drawn by the parent from the
run's generator, in the fused path's order) and the test inputs (M, P) into the buffers (grown, and sent
again, when N or M outgrow them), sends a small ``("fit", ...)`` message, fits the forward model itself and
then waits for the reply: the last epoch's summed squared error (a float32 value, sent exactly), with the test
outputs (M, P) in a shared buffer and, if asked, the VECA of the inverse model's hidden layers (Python floats).
The child runs ``OnlineModels._fit_one(1, ...)`` on its view of the shared tensors, the same code (and kernels)
as the thread path, so the result is the same, bit for bit.

While the robot moves, the child can already run the next fit's first SGD steps (``prefix``: both models,
epoch 0, the batches before the first one holding a sample not known yet, on the data and permutation the
parent expects; it backs up the state first). At the fit the parent stops it (``stop_prefix``: the number of
steps done) and keeps those steps only if the real permutation and the real samples of those batches are the
expected ones (else ``restore``s the backup): the same steps on the same batches, so the same bits.

Starting costs ~2 s (the child imports torch) and runs in the background: ``ready()`` says whether the child
has answered; until then (or if it failed to start) ``OnlineModels`` uses its thread path, which computes the
same bits. Peak memory: the child adds its own RSS (~520 MB, most of it what ``import torch`` takes).
"""

from __future__ import annotations

import signal
import weakref
from multiprocessing import resource_tracker
from typing import Any

import torch
import torch.multiprocessing as mp

from robot.online_child import serve

__all__ = ["FitProcess", "FitProcessError", "peak_child_rss_mb"]

START_TIMEOUT_S = 120.0  # a child that has not answered by then counts as failed
STOP_TIMEOUT_S = 5.0


class FitProcessError(RuntimeError):
    """The fit process died or failed during a fit (the inverse weights may be half-updated)."""


def _grow(t: torch.Tensor | None, lead: tuple[int, ...], rows: int, cols: tuple[int, ...],
          dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``t`` if it is at least (*lead, rows, *cols), else a new shared zero tensor with max(rows, 2 * old rows)
    rows and the larger of each other size."""
    d = len(lead)
    if t is not None and all(a >= b for a, b in zip(t.shape, (*lead, rows, *cols), strict=True)):
        return t
    old = t.shape if t is not None else (0,) * (d + 1 + len(cols))
    lead = tuple(max(a, b) for a, b in zip(old[:d], lead, strict=True))
    return torch.zeros((*lead, max(rows, 2 * old[d], 1), *cols), dtype=dtype).share_memory_()


class FitProcess:
    """One child process fitting model 1 (the inverse) of ``OnlineModels`` on shared tensors.

    spec: "cls" (``OnlineModels``) and the attributes a bare one needs (``online_split.SHARED``), its tensors already
    in shared memory. Starts the child at once (without waiting for it); ``failed`` if that raised.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.P = int(spec["P"])
        self.failed, self.is_ready, self.pending = False, False, False
        self._x: torch.Tensor | None = None  # (2, cap, P) packed inputs (the fit: [1] only)
        self._y: torch.Tensor | None = None  # (2, cap, P) packed targets
        self._perm: torch.Tensor | None = None  # (epochs, cap) int64
        self._tx: torch.Tensor | None = None  # (cap_test, P) test inputs
        self._pred: torch.Tensor | None = None  # (cap_test, P) the child's test outputs
        self._m = 0
        self.child_s = 0.0  # the child's own time for the last fit (seconds, from its message to its reply)
        self.proc: Any = None
        self.conn: Any = None
        self.prefixing = False
        self._state = [*spec["weights"], *spec["biases"], *spec["bufs"]]  # what a prefix changes
        try:
            self._backup = [torch.empty_like(t).share_memory_() for t in self._state]
            self._flag = torch.zeros(2, dtype=torch.int32).share_memory_()  # [1: stop the prefix, steps done]
            ctx = mp.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=serve, args=(child, spec, self._backup, self._flag), name="online-fit",
                                    daemon=True)
            # the child starts with SIGINT blocked (it then ignores it): a Ctrl-C during its start-up (importing
            # torch takes seconds) must not kill it; the parent's mask is restored at once. Start the resource
            # tracker first: starting it unblocks SIGINT in this thread, which would clear the block here.
            resource_tracker.ensure_running()
            old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
            try:
                self.proc.start()
            finally:
                signal.pthread_sigmask(signal.SIG_SETMASK, old)
            child.close()
        except Exception:  # noqa: BLE001  (no process: the caller falls back to the thread path)
            self.failed = True
            self.close()
            return
        weakref.finalize(self, _stop, self.proc, self.conn)

    def ready(self) -> bool:
        """Whether the child has started and answered (non-blocking); a child that died or did not answer within
        ``START_TIMEOUT_S`` is ``failed`` (and closed)."""
        if self.is_ready or self.failed:
            return self.is_ready
        try:
            if self.conn.poll(0):
                msg = self.conn.recv()
                self.is_ready = msg == ("ready",)
                self.failed = not self.is_ready
            elif not self.proc.is_alive():
                self.failed = True
        except (EOFError, OSError):
            self.failed = True
        if self.failed:
            self.close()
        return self.is_ready

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> bool:
        """Block until the child is ready (True) or failed / ``timeout`` seconds passed (False, then failed)."""
        if not (self.is_ready or self.failed):
            try:
                if not self.conn.poll(timeout):
                    self.failed = True
                    self.close()
            except (EOFError, OSError):
                self.failed = True
        return self.ready()

    def _buffers(self, n: int, e: int, m: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The data buffers, grown (and sent to the child) for N samples, e epochs, M test inputs."""
        old = [self._x, self._y, self._perm, self._tx, self._pred]
        new = [_grow(self._x, (2,), n, (self.P,)), _grow(self._y, (2,), n, (self.P,)),
               _grow(self._perm, (e,), n, (), torch.int64), _grow(self._tx, (), m, (self.P,)),
               _grow(self._pred, (), m, (self.P,))]
        if any(a is not b for a, b in zip(new, old, strict=True)):
            self._x, self._y, self._perm, self._tx, self._pred = new
            self._send(("buffers", *new))
        return new[0], new[1], new[2], new[3]

    def submit(self, x: torch.Tensor, y: torch.Tensor, perms: list[torch.Tensor], batch_size: int,
               test_x: torch.Tensor | None, skip: int = 0, veca: bool = False) -> None:
        """Start fitting the inverse model on x (N, P) / y (N, P), one permutation (N,) per epoch (the first
        ``skip`` steps of epoch 0 already done by a prefix), then (given test_x (M, P)) evaluating it on test_x
        and (``veca``) computing the VECA of its hidden layers on x; ``result()`` waits for it."""
        self.drain()
        n, e, m = x.shape[0], len(perms), 0 if test_x is None else test_x.shape[0]
        bx, by, bp, bt = self._buffers(n, e, m)
        bx[1, :n].copy_(x)
        by[1, :n].copy_(y)
        for i, p in enumerate(perms):
            bp[i, :n].copy_(p)
        if test_x is not None:
            bt[:m].copy_(test_x)
        self._m = m
        self._send(("fit", n, e, int(batch_size), m, int(skip), bool(veca)))
        self.pending = True

    def prefix(self, x: torch.Tensor, y: torch.Tensor, perm: torch.Tensor, steps: int, batch_size: int) -> None:
        """Start the first ``steps`` SGD steps of epoch 0 of both models on packed x (2, N, P) / y (2, N, P) in
        the order of perm (N,), after backing up the state; ``stop_prefix()`` ends it (nothing may read or
        write the models in between)."""
        self.drain()
        n = x.shape[1]
        bx, by, bp, _ = self._buffers(n, 1, 0)
        bx[:, :n].copy_(x)
        by[:, :n].copy_(y)
        bp[0, :n].copy_(perm)
        self._flag.zero_()
        self._send(("prefix", n, int(steps), int(batch_size)))
        self.pending = self.prefixing = True

    def prefix_steps(self) -> int:
        """Steps the running (or last) prefix has done so far."""
        return int(self._flag[1])

    def halt_prefix(self) -> None:
        """Ask the running prefix to stop after its current step (without waiting)."""
        if self.prefixing:
            self._flag[0] = 1

    def stop_prefix(self) -> int:
        """Stop the running prefix after its current step: the number of steps it did (0 without one)."""
        if not self.prefixing:
            return 0
        self._flag[0] = 1
        msg = self._recv()
        self.prefixing = False
        return int(msg[1])

    def restore(self) -> None:
        """Undo the last prefix: the weights and momentum buffers it backed up (the child is idle then)."""
        for t, b in zip(self._state, self._backup, strict=True):
            t.copy_(b)

    def result(self) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, float] | None]:
        """Wait for the submitted fit: the last epoch's summed squared error (1,), if test inputs were given the
        fitted inverse model's outputs on them (1, M, P) (a copy), and the VECA asked for (else None)."""
        msg = self._recv()
        if msg[0] != "ok":
            raise FitProcessError(f"the fit process failed: {msg[1]}")
        assert self._pred is not None
        self.child_s = float(msg[2])
        pred = self._pred[None, : self._m].clone() if self._m else None
        return torch.tensor([msg[1]], dtype=torch.float32), pred, msg[3]

    def drain(self) -> None:
        """Wait for (and drop) the reply of a fit still running, e.g. one whose ``result()`` a Ctrl-C cut short:
        the shared weights are complete again afterwards. A prefix still running is stopped and undone."""
        if self.prefixing:
            self.stop_prefix()
            self.restore()
        elif self.pending:
            self._recv()

    def _recv(self) -> tuple[Any, ...]:
        try:
            msg = self.conn.recv()
        except (EOFError, OSError) as e:
            self.pending = False
            self.failed = True
            self.close()
            raise FitProcessError(f"the fit process died ({e!r}); the inverse model may be half-fitted") from None
        self.pending = False  # not set if a KeyboardInterrupt cut recv() short: drain() waits again
        return msg

    def _send(self, msg: tuple[Any, ...]) -> None:
        try:
            self.conn.send(msg)
        except (OSError, ValueError) as e:
            self.failed = True
            self.close()
            raise FitProcessError(f"the fit process died ({e!r})") from None

    def close(self) -> None:
        """Stop the child (waits for a running fit, then up to ``STOP_TIMEOUT_S``; terminates it after that).
        A running prefix is stopped and undone."""
        if self.prefixing and self.conn is not None:
            try:
                self.drain()
            except FitProcessError:
                pass
        proc, conn, self.proc, self.conn = self.proc, self.conn, None, None
        self.is_ready = False
        self.pending = False
        _stop(proc, conn)


def _stop(proc: Any, conn: Any) -> None:
    if conn is not None:
        try:
            conn.send(("stop",))
        except (OSError, ValueError):
            pass
    if proc is not None:
        peak = _vm_hwm_mb(proc.pid) if proc.is_alive() else None
        if peak is not None:
            _PEAKS_MB.append(peak)
        proc.join(STOP_TIMEOUT_S)
        if proc.is_alive():
            proc.terminate()
            proc.join(STOP_TIMEOUT_S)
    if conn is not None:
        conn.close()


_PEAKS_MB: list[float] = []  # VmHWM of each stopped child


def _vm_hwm_mb(pid: int) -> float | None:
    """Peak resident memory of process ``pid`` since its exec (``VmHWM`` of /proc/PID/status), None if unknown.
    (``getrusage`` would not do: a child's ru_maxrss starts at its parent's RSS when it was forked.)"""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None


def peak_child_rss_mb() -> float:
    """The largest peak RSS of the fit processes stopped so far in this process (MB; 0 if none, or unknown)."""
    return max(_PEAKS_MB, default=0.0)
