"""Online fitting of the forward (motor -> code) and inverse (code -> motor) models, both at once.

The paper fits each model after every move on (memory + last 16 samples), 2 epochs, batch 16, SGD
(lr 0.0014, momentum 0.8, Nesterov), MSE. That is ~42 tiny SGD steps per move per model, so Python and
dispatch overhead dominate; here both models live in *stacked* tensors (index 0 = forward, 1 = inverse)
and one hand-written forward/backward/update with ``torch.baddbmm``/``bmm`` trains both per batch (no
autograd). The forward model's input (D) and the inverse's output (D) are zero-padded to P = max(D, C);
their padded weights start at zero and receive exactly zero gradient, so they stay zero and the result is
the same as two separate MLPs. Each model's loss is its own MSE (mean over batch and its own output dims).

Update rule (PyTorch SGD, nesterov=True): buf = mu*buf + g; p -= lr * (g + mu*buf).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from models.mlp import MLP, forward_model, inverse_model

__all__ = ["OnlineModels", "TrainingDivergedError"]


class TrainingDivergedError(RuntimeError):
    """The online fit produced NaN or inf (loss or weights)."""


class OnlineModels:
    """Forward and inverse MLPs trained together. motor_dim D, code_dim C; hidden sizes shared by both.

    seed: initialisation (Glorot-uniform, zero biases, like Keras). All arrays in/out are float32 numpy.
    """

    def __init__(self, motor_dim: int, code_dim: int, hidden: tuple[int, ...] = (320, 320), lr: float = 0.0014,
                 momentum: float = 0.8, nesterov: bool = True, seed: int = 0) -> None:
        self.D, self.C, self.hidden = int(motor_dim), int(code_dim), tuple(int(h) for h in hidden)
        self.lr, self.momentum, self.nesterov = float(lr), float(momentum), bool(nesterov)
        self.P = max(self.D, self.C)
        g = torch.Generator().manual_seed(seed)
        fwd, inv = forward_model(self.D, self.C, self.hidden), inverse_model(self.D, self.C, self.hidden)
        fwd.reset_parameters(g)
        inv.reset_parameters(g)
        self.weights: list[torch.Tensor] = []  # (2, in, out)
        self.biases: list[torch.Tensor] = []  # (2, 1, out)
        self._from_modules(fwd, inv)
        self.bufs = [torch.zeros_like(p) for p in self.params]
        # d(MSE)/d(out) = 2 (out - y) / (batch * dims); the batch part is applied per step
        self.out_scale = torch.tensor([2.0 / self.C, 2.0 / self.D]).view(2, 1, 1)

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

    def _forward(self, x: torch.Tensor, keep: bool = False) -> tuple[torch.Tensor, list[torch.Tensor]]:
        acts = [x]
        last = len(self.weights) - 1
        for i, (w, b) in enumerate(zip(self.weights, self.biases, strict=True)):
            x = torch.baddbmm(b, x, w)
            if i < last:
                x = x.tanh_()
            if keep:
                acts.append(x)
        return x, acts

    def _step(self, x: torch.Tensor, y: torch.Tensor, loss_acc: torch.Tensor | None) -> None:
        out, acts = self._forward(x, keep=True)
        g = out.sub_(y)
        if loss_acc is not None:
            loss_acc.add_(g.square().sum((1, 2)))
        g.mul_(self.out_scale / x.shape[1])
        grads: list[torch.Tensor] = []
        for i in range(len(self.weights) - 1, -1, -1):
            h = acts[i]
            grads.append(g.sum(1, keepdim=True))
            grads.append(torch.bmm(h.transpose(1, 2), g))
            if i:
                g = torch.bmm(g, self.weights[i].transpose(1, 2)).mul_(1.0 - h * h)
        grads.reverse()  # [W0, b0, W1, b1, ...]
        params, mu, lr = self.params, self.momentum, self.lr
        if mu:
            torch._foreach_mul_(self.bufs, mu)
            torch._foreach_add_(self.bufs, grads)
            if self.nesterov:
                torch._foreach_add_(grads, self.bufs, alpha=mu)
            else:
                grads = self.bufs
        torch._foreach_add_(params, grads, alpha=-lr)

    @torch.no_grad()
    def fit(self, motor: np.ndarray, code: np.ndarray, rng: np.random.Generator, epochs: int = 2,
            batch_size: int = 16) -> tuple[float, float]:
        """Fit both models on pairs motor (N, D) / code (N, C); shuffles each epoch with ``rng``.

        Returns (forward MSE, inverse MSE) averaged over the last epoch's batches (before each step).
        Raises ``TrainingDivergedError`` on NaN/inf in the losses or the weights.
        """
        x, y = self._pack(motor, code)
        n = x.shape[1]
        acc = torch.zeros(2)
        for e in range(epochs):
            perm = torch.from_numpy(rng.permutation(n))
            xp, yp = x[:, perm], y[:, perm]
            last = e == epochs - 1
            for s in range(0, n, batch_size):
                self._step(xp[:, s:s + batch_size], yp[:, s:s + batch_size], acc if last else None)
        losses = (acc / torch.tensor([n * self.C, n * self.D])).tolist() if n else [0.0, 0.0]
        if not (np.all(np.isfinite(losses)) and self.is_finite()):
            raise TrainingDivergedError(f"online training diverged (forward loss {losses[0]}, inverse loss "
                                        f"{losses[1]}); lower the learning rate (--lr)")
        return float(losses[0]), float(losses[1])

    @torch.no_grad()
    def predict(self, motor: np.ndarray, code: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Both models at once: forward(motor (N, D)) -> (N, C) and inverse(code (N, C)) -> (N, D)."""
        x, _ = self._pack(motor, code)
        out, _ = self._forward(x)
        return out[0, :, : self.C].numpy().copy(), out[1, :, : self.D].numpy().copy()

    def predict_code(self, motor: np.ndarray) -> np.ndarray:
        """Forward model: motor (N, D) -> code (N, C)."""
        m = np.atleast_2d(np.asarray(motor, np.float32))
        return self.predict(m, np.zeros((len(m), self.C), np.float32))[0]

    def predict_motor(self, code: np.ndarray) -> np.ndarray:
        """Inverse model: code (N, C) -> motor (N, D) (unclipped)."""
        c = np.atleast_2d(np.asarray(code, np.float32))
        return self.predict(np.zeros((len(c), self.D), np.float32), c)[1]

    def test_errors(self, motor: np.ndarray, code: np.ndarray) -> dict[str, Any]:
        """MSE of both models on a test set; also per-sample errors (N,) of each for regional measures."""
        pc, pm = self.predict(motor, code)
        per, inv = ((pc - code) ** 2).mean(1), ((pm - motor) ** 2).mean(1)
        return {"fwd_mse": float(per.mean()), "inv_mse": float(inv.mean()), "fwd_per_sample": per,
                "inv_per_sample": inv}
