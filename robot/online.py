"""Online fitting of the forward (motor -> code) and inverse (code -> motor) models, both at once.

The paper fits each model after every move on (memory + last 16 samples), 2 epochs, batch 16, SGD
(lr 0.0014, momentum 0.8, Nesterov), MSE. That is ~42 tiny SGD steps per move per model, so Python and
dispatch overhead dominate; here both models live in *stacked* tensors (index 0 = forward, 1 = inverse)
and one hand-written forward/backward/update with ``torch.baddbmm``/``bmm`` trains both per batch (no
autograd). The forward model's input (D) and the inverse's output (D) are zero-padded to P = max(D, C);
their padded weights start at zero and receive exactly zero gradient, so they stay zero and the result is
the same as two separate MLPs. Each model's loss is its own MSE (mean over batch and its own output dims).

Update rule (PyTorch SGD, nesterov=True): buf = mu*buf + g; p -= lr * (g + mu*buf).

``mode`` (``parallel``) "thread" or "process" fits the two models at once on two cores: the forward model here,
the inverse in a worker thread or a child process (``robot/online_split.py``, ``robot/online_proc.py``), on views
k:k+1 of the stacks with the same kernels and permutations: the same bits (tests/robot/test_loop_parallel.py).

``edm_weight`` w > 0 adds the EDM decorrelation penalty (issue 19.2; ``models.veca.edm_penalty``) of every hidden
layer to each model's loss: loss_k = MSE_k + w * sum_l EDM(h_l of model k over the batch, ``edm_groups`` groups),
its gradient (``robot.online_monitor.edm_hidden_grad``) joining the hand-written backward; w = 0 (the default)
runs exactly the plain update's ops. The reported losses stay the MSEs.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from models.mlp import MLP, forward_model, inverse_model
from robot.online_monitor import edm_hidden_grad, online_veca
from robot.online_proc import FitProcess
from robot.online_split import BOTH, FORWARD, INVERSE, MODES, SplitFit

__all__ = ["OnlineModels", "TrainingDivergedError", "MODES", "FORWARD", "INVERSE", "BOTH"]


class TrainingDivergedError(RuntimeError):
    """The online fit produced NaN or inf (loss or weights)."""


def _batches(t: torch.Tensor, perm: torch.Tensor, size: int) -> tuple[torch.Tensor, ...]:
    """Batches (views) ``t[:, perm][:, s:s + size]`` of t (M, N, P) in the order of perm (N,), none for N = 0."""
    return t[:, perm].split(size, 1) if t.shape[1] else ()


class OnlineModels(SplitFit):
    """Forward and inverse MLPs trained together. motor_dim D, code_dim C; hidden sizes shared by both.

    seed: initialisation (Glorot-uniform, zero biases, like Keras). All arrays in/out are float32 numpy.
    edm_weight, edm_groups: the EDM penalty on the hidden layers (see the module doc; 0 = off).
    parallel: a mode of ``MODES`` (True = "thread", False = "off"): fit (and evaluate) the two models at once
    in two threads or two processes (see the module doc); call ``close()`` (or use the object as a context
    manager) to stop the worker thread and the child process, else they end with this object or the process.
    """

    def __init__(self, motor_dim: int, code_dim: int, hidden: tuple[int, ...] = (320, 320), lr: float = 0.0014,
                 momentum: float = 0.8, nesterov: bool = True, seed: int = 0, parallel: bool | str = False,
                 edm_weight: float = 0.0, edm_groups: int = 4) -> None:
        self.D, self.C, self.hidden = int(motor_dim), int(code_dim), tuple(int(h) for h in hidden)
        self.edm_weight, self.edm_groups = float(edm_weight), int(edm_groups)
        if self.edm_weight and (self.edm_groups < 2 or any(h % self.edm_groups for h in self.hidden)):
            raise ValueError(f"EDM groups must be >= 2 and divide every hidden size {self.hidden}, "
                             f"got {self.edm_groups}")
        self.lr, self.momentum, self.nesterov = float(lr), float(momentum), bool(nesterov)
        self.P = max(self.D, self.C)
        g = torch.Generator().manual_seed(seed)
        fwd, inv = forward_model(self.D, self.C, self.hidden), inverse_model(self.D, self.C, self.hidden)
        fwd.reset_parameters(g)
        inv.reset_parameters(g)
        self.weights: list[torch.Tensor] = []  # (2, in, out); biases (2, 1, out)
        self.biases: list[torch.Tensor] = []
        self._from_modules(fwd, inv)
        self.bufs = [torch.zeros_like(p) for p in self.params]
        # d(MSE)/d(out) = 2 (out - y) / (batch * dims); the batch part is applied per step
        self.out_scale = torch.tensor([2.0 / self.C, 2.0 / self.D]).view(2, 1, 1)
        self.mode = "off"
        self.parallel = parallel
        self._pool: ThreadPoolExecutor | None = None
        self._proc: FitProcess | None = None
        self._spec: tuple[np.ndarray, np.ndarray, np.ndarray, int] | None = None  # speculate -> _fit
        self.prefix_stats = {"kept": 0, "undone": 0, "empty": 0, "steps": 0}  # prefixes (speculate) and kept steps
        self._test: tuple[np.ndarray, np.ndarray] | None = None  # fit_test -> fit -> _fit
        self._test_preds: tuple[torch.Tensor, torch.Tensor] | None = None
        self.veca_next, self.last_veca = False, None  # see ``fit``
        self._views = self.model_views()

    # -- parameters ---------------------------------------------------------------------------------
    @property
    def params(self) -> list[torch.Tensor]:
        return [t for pair in zip(self.weights, self.biases, strict=True) for t in pair]

    def _from_modules(self, fwd: MLP, inv: MLP) -> None:
        n = len(fwd.layers)
        self.weights, self.biases = [], []
        for i in range(n):
            lf, li = fwd.layers[i], inv.layers[i]
            rows = self.P if i == 0 else lf.in_features
            cols = self.P if i == n - 1 else lf.out_features
            w, b = torch.zeros(2, rows, cols), torch.zeros(2, 1, cols)
            for k, lin in enumerate((lf, li)):
                w[k, : lin.in_features, : lin.out_features] = lin.weight.detach().T
                b[k, 0, : lin.out_features] = lin.bias.detach()
            self.weights.append(w)
            self.biases.append(b)

    def model_views(self) -> list[dict[str, Any]]:
        """``_model_views`` of the forward model, the inverse one and both (the fused path), indexed by
        ``FORWARD``, ``INVERSE``, ``BOTH``."""
        return [self._model_views(k) for k in (FORWARD, INVERSE, None)]

    def _model_views(self, k: int | None) -> dict[str, Any]:
        """Model k (0 forward, 1 inverse; None: both) alone: views k:k+1 of the stacks, weights (1, in, out) and
        transposed ("wT"), biases (1, 1, out) (with the zero padding), "params" / "bufs" in ``params`` order, scale
        (1, 1, 1) and its cache per batch size ("per_b"). Views share storage (updating them updates the stack); a
        leading dim of 1 keeps every kernel the fused path's (2-D ``mm`` rounds differently for small matrices)."""
        sl = slice(None) if k is None else slice(k, k + 1)
        w, b = [t[sl] for t in self.weights], [t[sl] for t in self.biases]
        return {"w": w, "b": b, "params": [t for pair in zip(w, b, strict=True) for t in pair],
                "bufs": [t[sl] for t in self.bufs], "scale": self.out_scale[sl], "wT": [t.transpose(1, 2) for t in w],
                "per_b": {}}

    def to_modules(self) -> tuple[MLP, MLP]:
        """Copies as ordinary ``MLP`` modules (forward, inverse), e.g. for export or saving."""
        fwd, inv = forward_model(self.D, self.C, self.hidden), inverse_model(self.D, self.C, self.hidden)
        with torch.no_grad():
            for k, m in enumerate((fwd, inv)):
                for lin, w, b in zip(m.layers, self.weights, self.biases, strict=True):
                    lin.weight.copy_(w[k, : lin.in_features, : lin.out_features].T)
                    lin.bias.copy_(b[k, 0, : lin.out_features])
        return fwd.eval(), inv.eval()

    def state_dict(self) -> dict[str, torch.Tensor]:
        s = {f"p{i}": p.clone() for i, p in enumerate(self.params)}
        s.update({f"m{i}": b.clone() for i, b in enumerate(self.bufs)})
        return s

    def load_state_dict(self, s: dict[str, Any]) -> None:
        """Restore from ``state_dict()`` (tensors or numpy arrays)."""
        for i, p in enumerate(self.params):
            p.copy_(torch.as_tensor(s[f"p{i}"]))
        for i, b in enumerate(self.bufs):
            b.copy_(torch.as_tensor(s[f"m{i}"]))

    def is_finite(self) -> bool:
        return all(bool(torch.isfinite(p.sum())) for p in self.params)

    # -- compute ------------------------------------------------------------------------------------
    def _pack(self, motor: np.ndarray, code: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(motor)
        x, y = torch.zeros(2, n, self.P), torch.zeros(2, n, self.P)
        m, c = torch.as_tensor(np.asarray(motor, np.float32)), torch.as_tensor(np.asarray(code, np.float32))
        x[0, :, : self.D], x[1, :, : self.C] = m, c
        y[0, :, : self.C], y[1, :, : self.D] = c, m
        return x, y

    def _forward(self, x: torch.Tensor, keep: bool = False, v: dict[str, Any] | None = None
                 ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Both models (or, with ``v``, the one of ``_model_views``) on x (M, N, P) -> (M, N, P) (M = 2 or 1);
        ``keep``: also every layer's input and output."""
        ws, bs = (self.weights, self.biases) if v is None else (v["w"], v["b"])
        acts = [x]
        last = len(ws) - 1
        for i, (w, b) in enumerate(zip(ws, bs, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = x.tanh_()
            if keep:
                acts.append(x)
        return x, acts

    def _step(self, x: torch.Tensor, y: torch.Tensor, loss_acc: torch.Tensor | None,
              v: dict[str, Any] | None = None) -> None:
        """One SGD step on a batch x (M, B, P) / y (M, B, P) of both models (M = 2), or with ``v`` of the one
        model of ``_model_views`` (M = 1: the same ops on a leading dim of 1, so the same kernels and bits)."""
        v = self._views[BOTH] if v is None else v
        out, acts = self._forward(x, keep=True, v=v)
        wT, params, bufs, per_b, bsz = v["wT"], v["params"], v["bufs"], v["per_b"], x.shape[1]
        g = out.sub_(y)
        if loss_acc is not None:
            loss_acc.add_(g.square().sum((1, 2)))
        if bsz not in per_b:
            per_b[bsz] = v["scale"] / bsz
        g.mul_(per_b[bsz])
        grads: list[torch.Tensor] = []
        for i in range(len(wT) - 1, -1, -1):
            h = acts[i]
            grads.append(g.sum(1, keepdim=True))
            grads.append(torch.bmm(h.transpose(1, 2), g))
            if i:
                g = torch.bmm(g, wT[i])
                if self.edm_weight:  # d(w * EDM(h_i)) / d h_i, h_i (M, B, H) the hidden layer's output
                    g.add_(edm_hidden_grad(h, self.edm_groups), alpha=self.edm_weight)
                g.mul_(1.0 - h * h)
        grads.reverse()  # [W0, b0, W1, b1, ...]
        mu, lr = self.momentum, self.lr
        if mu:
            torch._foreach_mul_(bufs, mu)
            torch._foreach_add_(bufs, grads)
            if self.nesterov:
                torch._foreach_add_(grads, bufs, alpha=mu)
            else:
                grads = bufs
        torch._foreach_add_(params, grads, alpha=-lr)

    def _fit_one(self, k: int, x: torch.Tensor, y: torch.Tensor, perms: list[torch.Tensor], batch_size: int,
                 test_x: torch.Tensor | None = None, skip: int = 0) -> tuple[torch.Tensor, torch.Tensor | None]:
        """All epochs of model k on x (1, N, P) / y (1, N, P) (padded), one permutation (N,) per epoch, but the
        first ``skip`` steps of epoch 0 (done by a prefix; not with one epoch: they would count in the loss);
        returns the last epoch's summed squared error (1,) and, given test_x (1, M, P), the fitted model's output
        on it (1, M, P). Runs in any thread (grad mode is per thread)."""
        assert not skip or len(perms) > 1
        with torch.inference_mode():
            v, acc = self._views[k], torch.zeros(1)
            for e, perm in enumerate(perms):
                last = e == len(perms) - 1
                xs, ys = _batches(x, perm, batch_size), _batches(y, perm, batch_size)
                for xb, yb in zip(xs[0 if e else skip:], ys[0 if e else skip:], strict=True):
                    self._step(xb, yb, acc if last else None, v)
            return acc, (None if test_x is None else self._forward(test_x, v=v)[0])

    @torch.no_grad()
    def fit(self, motor: np.ndarray, code: np.ndarray, rng: np.random.Generator, epochs: int = 2,
            batch_size: int = 16, then: Callable[[], None] | None = None) -> tuple[float, float]:
        """Fit both models on pairs motor (N, D) / code (N, C); shuffles each epoch with ``rng``.

        Returns (forward MSE, inverse MSE) averaged over the last epoch's batches (before each step).
        Raises ``TrainingDivergedError`` on NaN/inf in the losses or the weights. ``then``: called once the
        forward model is fitted, while the inverse one may still be (parallel modes; "off": after the fit); it
        may use ``predict_code`` but nothing else of the models. With ``veca_next`` set, ``last_veca`` is then
        ``online_monitor.online_veca`` of the fitted models on (motor, code) (else None), computed by each side.
        """
        test, self._test = self._test, None
        losses, self._test_preds = self._fit(motor, code, rng, epochs, batch_size, test, then)
        return losses

    def fit_test(self, motor: np.ndarray, code: np.ndarray, rng: np.random.Generator, epochs: int,
                 batch_size: int, test_motor: np.ndarray, test_code: np.ndarray,
                 then: Callable[[], None] | None = None) -> tuple[tuple[float, float], dict[str, Any]]:
        """``fit(motor, code, ..., then)`` then ``test_errors(test_motor (M, D), test_code (M, C))`` of the fitted
        models; with ``parallel`` each side evaluates its own model right after its fit (the same numbers)."""
        if self.mode == "off":
            return self.fit(motor, code, rng, epochs, batch_size, then), self.test_errors(test_motor, test_code)
        self._test = (test_motor, test_code)  # for this fit (through ``fit``, so wrappers of it see the call)
        losses = self.fit(motor, code, rng, epochs, batch_size, then)
        preds, self._test_preds = self._test_preds, None
        assert preds is not None
        tm, tc = np.asarray(test_motor, np.float32), np.asarray(test_code, np.float32)
        return losses, self._errors(preds[0][0, :, : self.C].numpy(), preds[1][0, :, : self.D].numpy(), tm, tc)

    @torch.no_grad()
    def _fit(self, motor: np.ndarray, code: np.ndarray, rng: np.random.Generator, epochs: int, batch_size: int,
             test: tuple[np.ndarray, np.ndarray] | None = None, then: Callable[[], None] | None = None
             ) -> tuple[tuple[float, float], tuple[torch.Tensor, torch.Tensor] | None]:
        """``fit``; with a parallel ``mode`` and ``test`` (motor (M, D), code (M, C)) also the two fitted models'
        outputs on the test inputs: forward (1, M, P), inverse (1, M, P) (padded)."""
        preds = None
        x, y = self._pack(motor, code)
        n = x.shape[1]
        if self.mode != "off":
            acc, preds = self._fit_split(motor, code, x, y, self._pack(*test)[0] if test is not None else None, rng,
                                         epochs, batch_size, then)
            then = None
        else:
            self._take_prefix(motor, code, None, batch_size)  # (none in this mode: undone if there is one)
            acc = torch.zeros(2)
            for e in range(epochs):
                perm = torch.from_numpy(rng.permutation(n))
                last = e == epochs - 1
                for xb, yb in zip(_batches(x, perm, batch_size), _batches(y, perm, batch_size), strict=True):
                    self._step(xb, yb, acc if last else None)
        losses = (acc / torch.tensor([n * self.C, n * self.D])).tolist() if n else [0.0, 0.0]
        if not (np.all(np.isfinite(losses)) and self.is_finite()):
            raise TrainingDivergedError(f"online training diverged (forward loss {losses[0]}, inverse loss "
                                        f"{losses[1]}); lower the learning rate (--lr)")
        if self.mode == "off":
            self.last_veca = online_veca(self, motor, code) if self.veca_next else None
        if then is not None:
            then()
        return (float(losses[0]), float(losses[1])), preds

    @torch.no_grad()
    def predict(self, motor: np.ndarray, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both models at once: forward(motor (N, D)) -> (N, C) and inverse(code (N, C)) -> (N, D)."""
        x, _ = self._pack(motor, code)
        out, _ = self._forward(x)
        return out[0, :, : self.C].numpy().copy(), out[1, :, : self.D].numpy().copy()

    @torch.no_grad()
    def predict_code(self, motor: np.ndarray) -> np.ndarray:
        """Forward model: motor (N, D) -> code (N, C). Reads only the forward model (its view: the same bits as
        ``predict``), so it may run while the inverse one is fitted elsewhere."""
        m = np.atleast_2d(np.asarray(motor, np.float32))
        x = torch.zeros(1, len(m), self.P)
        x[0, :, : self.D] = torch.as_tensor(m)
        return self._forward(x, v=self._views[FORWARD])[0][0, :, : self.C].numpy().copy()

    def predict_motor(self, code: np.ndarray) -> np.ndarray:
        """Inverse model: code (N, C) -> motor (N, D) (unclipped)."""
        c = np.atleast_2d(np.asarray(code, np.float32))
        return self.predict(np.zeros((len(c), self.D), np.float32), c)[1]

    def test_errors(self, motor: np.ndarray, code: np.ndarray) -> dict[str, Any]:
        """MSE of both models on a test set; also per-sample errors (N,) of each for regional measures."""
        pc, pm = self.predict(motor, code)
        return self._errors(pc, pm, motor, code)

    @staticmethod
    def _errors(pc: np.ndarray, pm: np.ndarray, motor: np.ndarray, code: np.ndarray) -> dict[str, Any]:
        """``test_errors`` from predictions: codes pc (N, C) of motor (N, D), motors pm (N, D) of code (N, C)."""
        per, inv = ((pc - code) ** 2).mean(1), ((pm - motor) ** 2).mean(1)
        return {"fwd_mse": float(per.mean()), "inv_mse": float(inv.mean()), "fwd_per_sample": per,
                "inv_per_sample": inv}
