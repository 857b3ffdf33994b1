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
outputs (M, P) in a shared buffer. The child runs ``OnlineModels._fit_one(1, ...)`` on its view of the shared
tensors, the same code (and kernels) as the thread path, so the result is the same, bit for bit.

Starting costs ~2 s (the child imports torch) and runs in the background: ``ready()`` says whether the child
has answered; until then (or if it failed to start) ``OnlineModels`` uses its thread path, which computes the
same bits. Peak memory: the child adds its own RSS (~250 MB, torch's libraries).
"""

from __future__ import annotations

import signal
import time
import weakref
from multiprocessing import resource_tracker
from typing import Any

import torch
import torch.multiprocessing as mp

__all__ = ["FitProcess", "FitProcessError", "peak_child_rss_mb"]

START_TIMEOUT_S = 120.0  # a child that has not answered by then counts as failed
STOP_TIMEOUT_S = 5.0


class FitProcessError(RuntimeError):
    """The fit process died or failed during a fit (the inverse weights may be half-updated)."""


def _grow(t: torch.Tensor | None, rows: int, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """``t`` if it has at least ``rows`` rows, else a new shared zero tensor (max(rows, 2 * old rows), *shape)."""
    if t is not None and t.shape[0] >= rows:
        return t
    n = max(rows, 2 * (t.shape[0] if t is not None else 0), 1)
    return torch.zeros((n, *shape), dtype=dtype).share_memory_()


class FitProcess:
    """One child process fitting model 1 (the inverse) of ``OnlineModels`` on shared tensors.

    spec: the attributes a bare ``OnlineModels`` needs (``OnlineModels._shared_spec()``), its tensors already
    in shared memory. Starts the child at once (without waiting for it); ``failed`` if that raised.
    """

    def __init__(self, spec: dict[str, Any]) -> None:
        self.P = int(spec["P"])
        self.failed, self.is_ready, self.pending = False, False, False
        self._x: torch.Tensor | None = None  # (cap, P) inverse input (codes, padded)
        self._y: torch.Tensor | None = None  # (cap, P) inverse target (motors, padded)
        self._perm: torch.Tensor | None = None  # (epochs, cap) int64
        self._tx: torch.Tensor | None = None  # (cap_test, P) test inputs
        self._pred: torch.Tensor | None = None  # (cap_test, P) the child's test outputs
        self._m = 0
        self.child_s = 0.0  # the child's own time for the last fit (seconds, from its message to its reply)
        self.proc: Any = None
        self.conn: Any = None
        try:
            ctx = mp.get_context("spawn")
            self.conn, child = ctx.Pipe()
            self.proc = ctx.Process(target=_serve, args=(child, spec), name="online-fit", daemon=True)
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

    def submit(self, x: torch.Tensor, y: torch.Tensor, perms: list[torch.Tensor], batch_size: int,
               test_x: torch.Tensor | None) -> None:
        """Start fitting the inverse model on x (N, P) / y (N, P), one permutation (N,) per epoch, then (given
        test_x (M, P)) evaluating it on test_x; ``result()`` waits for it."""
        self.drain()
        n, e, m = x.shape[0], len(perms), 0 if test_x is None else test_x.shape[0]
        new = [_grow(self._x, n, (self.P,), torch.float32), _grow(self._y, n, (self.P,), torch.float32)]
        if self._perm is None or self._perm.shape[0] < e or self._perm.shape[1] < n:
            cap = max(n, new[0].shape[0])
            new.append(torch.zeros((e, cap), dtype=torch.int64).share_memory_())
        else:
            new.append(self._perm)
        new += [_grow(self._tx, m, (self.P,), torch.float32), _grow(self._pred, m, (self.P,), torch.float32)]
        old = [self._x, self._y, self._perm, self._tx, self._pred]
        if any(a is not b for a, b in zip(new, old, strict=True)):
            self._x, self._y, self._perm, self._tx, self._pred = new
            self._send(("buffers", *new))
        assert self._x is not None and self._y is not None and self._perm is not None and self._tx is not None
        self._x[:n].copy_(x)
        self._y[:n].copy_(y)
        for i, p in enumerate(perms):
            self._perm[i, :n].copy_(p)
        if test_x is not None:
            self._tx[:m].copy_(test_x)
        self._m = m
        self._send(("fit", n, e, int(batch_size), m))
        self.pending = True

    def result(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Wait for the submitted fit: the last epoch's summed squared error (1,) and, if test inputs were given,
        the fitted inverse model's outputs on them (1, M, P) (a copy)."""
        msg = self._recv()
        if msg[0] != "ok":
            raise FitProcessError(f"the fit process failed: {msg[1]}")
        assert self._pred is not None
        self.child_s = float(msg[2])
        pred = self._pred[None, : self._m].clone() if self._m else None
        return torch.tensor([msg[1]], dtype=torch.float32), pred

    def drain(self) -> None:
        """Wait for (and drop) the reply of a fit still running, e.g. one whose ``result()`` a Ctrl-C cut short:
        the shared weights are complete again afterwards."""
        if self.pending:
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
        """Stop the child (waits for a running fit, then up to ``STOP_TIMEOUT_S``; terminates it after that)."""
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


def _serve(conn: Any, spec: dict[str, Any]) -> None:
    """The child: fit model 1 on the shared tensors of ``spec`` per ``("fit", N, epochs, batch, M)`` message."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    torch.set_num_threads(1)
    from robot.online import OnlineModels

    models = OnlineModels.from_shared_spec(spec)
    x = y = perm = tx = pred = torch.zeros(0)
    conn.send(("ready",))
    while True:
        try:
            msg = conn.recv()
        except (EOFError, OSError):  # the parent is gone
            return
        if msg[0] == "stop":
            return
        if msg[0] == "buffers":
            x, y, perm, tx, pred = msg[1:]
            continue
        _, n, e, batch, m = msg
        t0 = time.perf_counter()
        try:
            acc, out = models._fit_one(1, x[None, :n], y[None, :n], [perm[i, :n] for i in range(e)], batch,
                                       tx[None, :m] if m else None)
            if out is not None:
                pred[:m].copy_(out[0])
            conn.send(("ok", float(acc[0]), time.perf_counter() - t0))
        except Exception as err:  # noqa: BLE001  (reported to the parent, which raises it)
            conn.send(("error", repr(err)))
