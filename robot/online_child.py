"""The fit process's side of ``robot.online_proc.FitProcess``: its message loop (``serve``) and the prefix.

Messages (tuples) from the parent: ``("buffers", x, y, perm, test_x, pred)`` (shared data buffers: x, y
(2, cap, P), perm (epochs, cap) int64, test_x / pred (cap_test, P)); ``("fit", N, epochs, batch, M, skip, veca)``:
fit the inverse model (``OnlineModels._fit_one(1, ...)``) on x[1, :N] / y[1, :N] with the permutations
perm[:, :N], the first ``skip`` steps of epoch 0 already done, then its outputs on test_x[:M] into pred[:M] and,
with ``veca``, the VECA of its hidden layers on its inputs (``online_monitor.model_veca``); reply
``("ok", loss sum, seconds, VECA dict or None)`` or ``("error", text)``; ``("prefix", N, steps, batch)``: a
prefix (below), reply ``("prefix", steps done)``; ``("stop",)``: exit (as when the parent is gone).
"""

from __future__ import annotations

import signal
import time
from typing import Any

import torch

from robot.online_monitor import model_veca

__all__ = ["serve"]


def _prefix(models: Any, state: list[torch.Tensor], backup: list[torch.Tensor], flag: torch.Tensor, x: torch.Tensor,
            y: torch.Tensor, perm: torch.Tensor, steps: int, batch: int) -> int:
    """Back up ``state``, then up to ``steps`` fused SGD steps of both models on packed x (2, N, P) / y (2, N, P)
    in the order of perm (N,) (as the fused path's epoch 0) until ``flag[0]`` is set, counting them in
    ``flag[1]``; the number of steps done."""
    for t, b in zip(state, backup, strict=True):
        b.copy_(t)
    stop = flag.numpy()
    with torch.inference_mode():
        xp, yp = x[:, perm], y[:, perm]
        for i in range(steps):
            if stop[0]:
                return i
            models._step(xp[:, i * batch:(i + 1) * batch], yp[:, i * batch:(i + 1) * batch], None)
            stop[1] = i + 1
    return steps


def serve(conn: Any, spec: dict[str, Any], backup: list[torch.Tensor], flag: torch.Tensor) -> None:
    """The child: per ``("fit", N, epochs, batch, M, skip, veca)`` message fit model 1 on the shared tensors of
    ``spec``, per ``("prefix", N, steps, batch)`` run a prefix of both models (``FitProcess.prefix``)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
    torch.set_num_threads(1)
    models = spec.pop("cls").from_shared_spec(spec)  # the class, pickled by name: no import of robot.online here
    state = [*models.weights, *models.biases, *models.bufs]
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
        t0 = time.perf_counter()
        try:
            if msg[0] == "prefix":
                _, n, steps, batch = msg
                conn.send(("prefix", _prefix(models, state, backup, flag, x[:, :n], y[:, :n], perm[0, :n], steps,
                                             batch)))
                continue
            _, n, e, batch, m, skip, veca = msg
            acc, out = models._fit_one(models.INVERSE, x[1:, :n], y[1:, :n], [perm[i, :n] for i in range(e)], batch,
                                       tx[None, :m] if m else None, skip)
            if out is not None:
                pred[:m].copy_(out[0])
            vec = model_veca(models, models.INVERSE, x[1, :n, :models.C]) if veca else None  # while the parent logs
            conn.send(("ok", float(acc[0]), time.perf_counter() - t0, vec))
        except Exception as err:  # noqa: BLE001  (reported to the parent, which raises it)
            conn.send(("error", repr(err)))
