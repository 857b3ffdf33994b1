"""Mean-field CRF in torch, exportable to ONNX: the bilateral term on a bilateral grid (default) or ConvCRF-style in
a local window (Teichmann & Cipolla 2018).

The model of Krähenbühl & Koltun (2011) with two kernels and Potts compatibility:

- Gaussian (smoothness) kernel ``exp(-|p_i - p_j|^2 / (2 sxy_g^2))``, weight ``gaussian_compat``;
- bilateral (appearance) kernel ``exp(-|p_i - p_j|^2 / (2 sxy_b^2) - |I_i - I_j|^2 / (2 srgb^2))``,
  weight ``bilateral_compat``;

and a fixed number of mean-field iterations ``Q <- softmax(log P + sum_k w_k * (K_k Q) / (K_k 1))``.
The messages are normalised by the kernel's row sum (self included), as pydensecrf's normalisation does
(up to symmetric vs. row normalisation), so the compat weights mean the same as pydensecrf's.

The Gaussian term (both modes) is computed at 1/``gauss_stride`` resolution (default 2) by one separable kernel,
the composite of three box filters whose combined variance approximates ``(sxy / gauss_stride)^2`` (widths 3, 3, 3
for ``sxy=3``, i.e. std 2.83 px at full resolution), run as shifted adds (two depthwise Conv nodes under ONNX
export), normalised at the borders by the same filter of ones, and upsampled bilinearly.

``bilateral="grid"`` (the default): every iteration at full resolution; the bilateral term by splat / blur / slice on a
bilateral grid (``models.bilateral_grid``, its buffers reused call after call): dense in range like
pydensecrf's permutohedral lattice, so it agrees with pydensecrf's example outputs on 99.2-99.7% of pixels (the
window: 89-98%) and keeps the dense CRF's mIoU gain, in ~11x less time than pydensecrf at 500x375 with 2
threads (README, ``bench/segment.py``).

``bilateral="window"`` approximations (documented, measured in ``tests/vision/test_crf.py`` against pydensecrf):

- Two labels (the segmenter's case) run on one channel: the softmax of two logits is a sigmoid of their
  difference, and with normalised filters the background's message is the total weight minus the
  foreground's. With ``gauss_stride`` > 1 all iterations but the last run at 1/``gauss_stride``
  resolution; the last adds the upsampled message to the full-resolution unary. Bilateral weights
  below exp(-30) are set to 0 (denormal floats make ``exp`` about 15x slower on CPU).
- The bilateral term cannot be dense with ``sxy=80``: as ConvCRF does with its blur factor, the image and
  Q are average-pooled by ``blur`` (default 8), messages are passed within a ``window x window``
  neighbourhood
  (default 11, i.e. +-40 px at full resolution for blur 8) at that resolution with ``sxy / blur``, and the
  result is upsampled bilinearly. Pixels further apart than the window never talk to each other, and
  colours are averaged over ``blur x blur`` blocks, so edges are a little softer than the dense CRF's.

Everything is a fixed-size loop (iterations) of conv/gather/exp/pool/resize ops, which unrolls
when exported with ``torch.onnx.export(..., dynamo=True, opset_version=18)``. The bilateral weights are
computed (and normalised) once per call; each iteration's bilateral message is then a window gather (a one-hot
column-shift convolution and one gather of whole rows, not F.unfold, whose per-element gathers are slow in ONNX
Runtime) times the weights, summed by a 1x1 convolution.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.bilateral_grid import BilateralGrid, GridWorkspace, avg_pool

__all__ = ["MeanFieldCRF"]


def _box_widths(sigma: float, n: int = 3) -> list[int]:
    """Odd widths of ``n`` box filters whose repeated application approximates a Gaussian of ``sigma``."""
    ideal = math.sqrt(12.0 * sigma * sigma / n + 1.0)
    wl = int(math.floor(ideal))
    wl -= 1 if wl % 2 == 0 else 0
    wl = max(wl, 1)
    m = round((12.0 * sigma * sigma - n * wl * wl - 4 * n * wl - 3 * n) / (-4.0 * wl - 4.0))
    return [wl] * max(0, min(n, m)) + [wl + 2] * (n - max(0, min(n, m)))


class MeanFieldCRF(nn.Module):
    """Refine class probabilities with a mean-field CRF.

    ``forward(probs [N,L,H,W] float32 (sums to 1 over L), image [N,3,H,W] float32 in 0..255)
    -> refined probabilities [N,L,H,W] float32``.
    Defaults are pydensecrf's example values (Gaussian sxy=3 compat=3; bilateral sxy=80 srgb=13 compat=10;
    5 iterations). ``bilateral``: "grid" (default) computes the bilateral term on a bilateral grid
    (``models.bilateral_grid``, every iteration at full resolution); "window" in a ConvCRF local window, where
    ``window`` and ``blur`` set the local approximation of the bilateral term,
    ``gauss_stride`` the resolution of the Gaussian term and of the two-label iterations but the last
    (1: everything at full resolution, as before).
    """

    def __init__(self, gaussian_sxy: float = 3.0, gaussian_compat: float = 3.0, bilateral_sxy: float = 80.0,
                 bilateral_srgb: float = 13.0, bilateral_compat: float = 10.0, iterations: int = 5,
                 window: int = 11, blur: int = 8, eps: float = 1e-8, gauss_stride: int = 2,
                 bilateral: str = "grid") -> None:
        super().__init__()
        if bilateral not in ("window", "grid"):
            raise ValueError(f"bilateral must be 'window' or 'grid', got {bilateral!r}")
        self.bilateral = bilateral
        if window < 1 or window % 2 == 0:
            raise ValueError(f"window must be an odd positive integer, got {window}")
        if blur < 1 or iterations < 0 or gauss_stride < 1:
            raise ValueError(f"need blur >= 1, gauss_stride >= 1 and iterations >= 0, got blur={blur}, "
                             f"gauss_stride={gauss_stride}, iterations={iterations}")
        self.gaussian_compat = float(gaussian_compat)
        self.bilateral_compat = float(bilateral_compat)
        self.bilateral_sxy = float(bilateral_sxy)
        self.bilateral_srgb = float(bilateral_srgb)
        self.iterations = int(iterations)
        self.window = int(window)
        self.blur = int(blur)
        self.eps = float(eps)
        self.gauss_stride = int(gauss_stride)
        self.boxes = _box_widths(float(gaussian_sxy) / self.gauss_stride)
        # the Gaussian at 1/gauss_stride resolution: the boxes as one composite kernel
        kernel = torch.ones(1, dtype=torch.float64)
        for wd in self.boxes:
            box = torch.ones(1, 1, wd, dtype=torch.float64)
            kernel = F.conv1d(kernel.view(1, 1, -1), box, padding=wd - 1).view(-1)
        self.gauss_taps = (kernel / kernel.sum()).tolist()  # odd length, symmetric
        self._workspace = GridWorkspace()  # the grid's scratch buffers, reused call after call
        # spatial part of the bilateral kernel for each window offset, at the pooled resolution, in the order
        # of ``_window``'s channels: column offset major, row offset minor
        r, k = self.window // 2, self.window
        s = self.bilateral_sxy / self.blur
        offs = [(dy, dx) for dx in range(-r, r + 1) for dy in range(-r, r + 1)]
        spatial = torch.tensor([-(dy * dy + dx * dx) / (2.0 * s * s) for dy, dx in offs], dtype=torch.float32)
        self.register_buffer("spatial", spatial.view(1, 1, -1, 1, 1), persistent=False)
        # one-hot 1 x window kernels: channel j of the convolution is the map shifted by j - r columns
        shift = torch.eye(k, dtype=torch.float32).view(k, 1, 1, k)
        self.register_buffer("shift_x", shift, persistent=False)
        # the window sum as a 1x1 convolution (a GEMM): ReduceSum over a middle axis is slow in ONNX Runtime
        self.register_buffer("ones", torch.ones(1, k * k, 1, 1), persistent=False)

    # -- kernels ---------------------------------------------------------------------------------------
    def _pool(self, x: Tensor) -> Tensor:
        return avg_pool(x, self.blur)

    def _window(self, x: Tensor) -> Tensor:
        """``x`` [N,C,h+2r,w+2r] (padded by r = window // 2) -> its window neighbours [N,C,K,h,w], K = window^2.

        The column shifts are a one-hot convolution, the row shifts one gather of whole rows: in ONNX a Conv
        and a Gather with contiguous blocks (F.unfold exports as per-element gathers and a transpose, slow in
        ONNX Runtime); in torch about twice as fast as F.unfold too. Neighbour order: see ``spatial``."""
        n, c, k = x.shape[0], x.shape[1], self.window
        h, w = x.shape[2] - (k - 1), x.shape[3] - (k - 1)
        cols = F.conv2d(x.reshape(n * c, 1, h + k - 1, w + k - 1), self.shift_x)  # [NC,k,h+2r,w]
        rows = (torch.arange(k, device=x.device).view(k, 1) + torch.arange(h, device=x.device).view(1, h)).view(-1)
        return cols.index_select(2, rows).view(n, c, k * k, h, w)

    def _window_sum(self, x: Tensor) -> Tensor:
        """``x`` [N,C,K,h,w] -> its sum over the window [N,C,h,w]."""
        n, c, k2, h, w = x.shape
        return F.conv2d(x.reshape(n * c, k2, h, w), self.ones).view(n, c, h, w)

    def _bilateral_weights(self, image: Tensor) -> Tensor:
        """Kernel weights [N,1,K,h,w] between each pooled pixel and its K window neighbours (0 outside), divided
        by their sum (the kernel's row sum, self included), so that a message is a plain weighted sum.

        The image is padded with a colour far from any real one, so that neighbours outside it get weight 0.
        """
        img = self._pool(image) / self.bilateral_srgb
        r = self.window // 2
        d = self._window(F.pad(img, (r, r, r, r), value=1000.0)) - img.unsqueeze(2)  # [N,3,K,h,w]
        e = -0.5 * (d[:, 0:1] * d[:, 0:1] + d[:, 1:2] * d[:, 1:2] + d[:, 2:3] * d[:, 2:3]) + self.spatial
        # weights below exp(-30) ~ 1e-13 (next to the self weight 1) are set to 0: exp of very negative
        # numbers makes denormal floats, which are about 15x slower on CPUs
        wts = torch.exp(e.clamp_min(-30.0)) * (e > -30.0).to(e.dtype)
        return wts / self._window_sum(wts).unsqueeze(2)

    # -- inference -------------------------------------------------------------------------------------
    def forward(self, probs: Tensor, image: Tensor) -> Tensor:
        """probs [N,L,H,W] float32, image [N,3,H,W] float32 0..255 -> refined probs [N,L,H,W] float32."""
        if self.bilateral == "grid":
            return self._forward_grid(probs, image)
        h, w = probs.shape[-2], probs.shape[-1]
        logp = torch.log(probs.clamp_min(self.eps))
        wts = self._bilateral_weights(image)  # [N,1,K,h',w'], normalised
        gnorm = self._gauss_norm(probs)
        q = probs
        n_labels = probs.shape[1]
        if n_labels == 2 and self.iterations > 0:
            return self._two_labels(logp, wts, gnorm, h, w)
        for _ in range(self.iterations):
            # Both filters are normalised (rows sum to 1) and Q sums to 1 over labels, so the messages sum
            # to 1 over labels too: filter the first L-1 labels only and get the last one as 1 - their sum.
            m = self._message(q[:, : n_labels - 1], wts, gnorm, h, w)
            last = (self.gaussian_compat + self.bilateral_compat) - m.sum(1, keepdim=True)
            q = torch.softmax(logp + torch.cat([m, last], 1), dim=1)
        return q

    def _message(self, q: Tensor, wts: Tensor, gnorm: Tensor, h: int, w: int, stride: int | None = None) -> Tensor:
        """Weighted messages of label maps ``q`` [N,C,H,W] -> [N,C,H,W]: Gaussian + bilateral, each normalised.

        The Gaussian term runs at 1/``gauss_stride`` resolution (its sxy scaled alike; ``gnorm`` [N,1,h',w'] its
        row sums there, ``_gauss_norm``); the bilateral term at 1/``blur``; their weighted sum is upsampled
        bilinearly once.
        """
        s = self.gauss_stride if stride is None else stride  # stride 1: q is already at 1/gauss_stride
        qh = avg_pool(q, s)
        if self.blur % self.gauss_stride == 0:
            b = self.blur // self.gauss_stride
            ql = avg_pool(qh, b)
        else:
            ql = self._pool(q)
        r = self.window // 2
        acc = self._window_sum(self._window(F.pad(ql, (r, r, r, r))) * wts)
        if acc.shape[-2:] != qh.shape[-2:]:
            acc = F.interpolate(acc, size=(qh.shape[-2], qh.shape[-1]), mode="bilinear", align_corners=False)
        m = self.gaussian_compat * self._gauss_conv(qh) / gnorm + self.bilateral_compat * acc
        if s > 1:
            m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        return m

    def _two_labels(self, logp: Tensor, wts: Tensor, gnorm: Tensor, h: int, w: int) -> Tensor:
        """The L = 2 case on one channel: softmax of two logits is the sigmoid of their difference, and the
        background message is (gaussian_compat + bilateral_compat) - the foreground's (normalised filters)."""
        d = logp[:, 1:2] - logp[:, 0:1] - (self.gaussian_compat + self.bilateral_compat)
        q1 = torch.sigmoid(logp[:, 1:2] - logp[:, 0:1])
        s = self.gauss_stride
        if s == 1 or self.blur % s:
            for _ in range(self.iterations):
                q1 = torch.sigmoid(d + 2.0 * self._message(q1, wts, gnorm, h, w))
            return torch.cat([1.0 - q1, q1], 1)
        # all but the last iteration at 1/s resolution (the messages are smooth at that scale anyway);
        # the last one combines the upsampled message with the full-resolution unary
        dh, qh = avg_pool(d, s), avg_pool(q1, s)
        hh, wh = qh.shape[-2], qh.shape[-1]
        for _ in range(self.iterations - 1):
            qh = torch.sigmoid(dh + 2.0 * self._message(qh, wts, gnorm, hh, wh, stride=1))
        m = self._message(qh, wts, gnorm, hh, wh, stride=1)
        m = F.interpolate(m, size=(h, w), mode="bilinear", align_corners=False)
        q1 = torch.sigmoid(d + 2.0 * m)
        return torch.cat([1.0 - q1, q1], 1)

    def _forward_grid(self, probs: Tensor, image: Tensor) -> Tensor:
        """All iterations at full resolution: the bilateral term on a bilateral grid (``models.bilateral_grid``:
        dense in range, no window), the Gaussian term by one separable kernel at 1/``gauss_stride`` resolution
        (upsampled), both normalised. (Running all iterations but the last at 1/2 resolution, as the window mode
        does, made it ~1.4x faster but cost 0.16 / 0.14 mIoU points of gain at 1 / 5 shots: the 5-shot gain then
        fell 0.58 below the dense CRF's.)"""
        logp = torch.log(probs.clamp_min(self.eps))
        grid = BilateralGrid(image, self.bilateral_sxy, self.bilateral_srgb, self._workspace)
        total = self.gaussian_compat + self.bilateral_compat
        h, w, st = probs.shape[-2], probs.shape[-1], self.gauss_stride
        wg, wb = self.gaussian_compat, self.bilateral_compat
        gauss_norm = self._gauss_norm(probs)

        def gauss(q: Tensor) -> Tensor:
            """Normalised Gaussian of ``q`` [N,C,H,W], computed at 1/``gauss_stride`` resolution and upsampled."""
            g = self._gauss_conv(avg_pool(q, st)) / gauss_norm
            return F.interpolate(g, size=(h, w), mode="bilinear", align_corners=False) if st > 1 else g

        n_labels = probs.shape[1]
        if n_labels == 2:  # one channel, as in _two_labels
            d = logp[:, 1:2] - logp[:, 0:1] - total
            q1 = probs[:, 1:2]
            if torch.onnx.is_in_onnx_export() and wg:  # the same sums, the weights folded into the normalisations once
                # (two full-size Mul nodes less per iteration in ONNX Runtime; eager keeps its in-place adds)
                gauss_norm = gauss_norm / (2.0 * wg)
                for _ in range(self.iterations):
                    q1 = torch.sigmoid(d + gauss(q1) + grid.filter(q1, 2.0 * wb))
                return torch.cat([1.0 - q1, q1], 1)
            for _ in range(self.iterations):
                q1 = torch.sigmoid(torch.add(d, gauss(q1), alpha=2.0 * wg).add_(grid.filter(q1), alpha=2.0 * wb))
            return torch.cat([1.0 - q1, q1], 1)
        q = probs
        for _ in range(self.iterations):
            ql = q[:, : n_labels - 1]
            m = wg * gauss(ql) + wb * grid.filter(ql)
            q = torch.softmax(logp + torch.cat([m, total - m.sum(1, keepdim=True)], 1), dim=1)
        return q

    def _gauss_norm(self, probs: Tensor) -> Tensor:
        """Row sums [N,1,h',w'] of the Gaussian kernel at 1/``gauss_stride`` of ``probs`` [N,L,H,W] (smaller at the
        borders, where the zero padding takes weight away): dividing by them normalises the message."""
        return self._gauss_conv(torch.ones_like(avg_pool(probs[:, :1], self.gauss_stride)))

    def _gauss_conv(self, x: Tensor) -> Tensor:
        """Unnormalised separable Gaussian of ``x`` [N,C,h,w] (zero padded): the
        composite of ``_box_widths``'s boxes (exactly their repeated application). Eager torch runs it as
        shifted adds along rows then columns (a 1-channel conv2d costs ~10x more there with 2 threads); the ONNX
        export as two Conv nodes (the same filter; hundreds of Slice/Add nodes are slower in ONNX Runtime)."""
        taps = self.gauss_taps
        r = len(taps) // 2
        if torch.onnx.is_in_onnx_export():
            c = x.shape[1]
            k = torch.tensor(taps, dtype=x.dtype, device=x.device)
            x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), padding=(0, r), groups=c)
            return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), padding=(r, 0), groups=c)
        for dim, pad in ((3, (r, r, 0, 0)), (2, (0, 0, r, r))):
            n = x.shape[dim]
            xp = F.pad(x, pad)
            out = xp.narrow(dim, r, n) * taps[r]
            for i in range(r):  # the kernel is symmetric: one multiply per pair of taps
                out = out.add_(xp.narrow(dim, i, n) + xp.narrow(dim, 2 * r - i, n), alpha=taps[i])
            x = out
        return x
