"""Bilateral filtering on a bilateral grid (Chen, Paris & Durand 2007), for the mean-field CRF: exportable to ONNX.

The bilateral kernel of a dense CRF, ``k(i, j) = exp(-|p_i - p_j|^2 / (2 sxy^2) - |I_i - I_j|^2 / (2 srgb^2))``,
is a Gaussian in the 5-D space (y/sxy, x/sxy, r/srgb, g/srgb, b/srgb). Filtering with it:

1. *splat*: every pixel adds its value to the grid cell nearest to its 5-D position (cells 1 sigma wide,
   the spatial cell rounded to whole pixels; the colour axes span 0..255, the spatial axes the image; one
   empty cell of padding on every side);
2. *blur*: a [1, 2, 1] / 4 filter along each of the 5 axes (variance 0.5 cell^2 per axis; with the +-0.5
   cell rounding of splat and slice the effective standard deviation is ~0.8 sigma, see ``CELL_XY``);
3. *slice*: every pixel reads the blurred value of its own cell.

The result is divided by the same filter applied to ones (the kernel's row sum, self included), as the window
CRF normalises. Unlike a local window, every pixel talks to every pixel of similar colour within a few sxy,
at the pixel's own colour resolution: a leaf edge stays sharp because the two sides fall in different colour
cells. Cost per filtering: a scatter-add and a gather of H*W values and 5 passes over the grid, whose size
(H/sxy + 3) * (W/sxy + 3) * (255/srgb + 3)^3 does not grow with the pixel count (~0.88 M cells at 500x375
with pydensecrf's sxy=80, srgb=13). The ONNX export splats into the grid without its pads (~0.39 M cells at
500x375) and blurs it with tridiagonal matrices, the pads' zeros implicit: ScatterElements(reduction="add"),
MatMul, GatherElements.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["BilateralGrid", "GridWorkspace", "avg_pool"]

# cell side in units of the kernel's sigma. The [1, 2, 1] blur (variance 0.5 cell^2) and the rounding of splat
# and slice (2 x 1/12 cell^2) give an effective std of sqrt(2/3) = 0.82 cell. Cells of 1 sigma (std 0.82 sigma)
# kept the dense CRF's mIoU gain on training-fold episodes (+4.18 / +3.05 against +4.15 / +2.96, 1 / 5 shots);
# 1.25 sigma cells (std 1.02 sigma, 2.3x fewer cells) fell to +2.80 / +1.76, 1.5 / 2 sigma spatial cells
# to +3.98 / +3.75 at 1 shot: the colour selectivity is what snaps the labels to leaf edges.
CELL_XY = 1.0
CELL_RGB = 1.0


class GridWorkspace:
    """Two flat scratch buffers that a ``BilateralGrid`` reuses for its splat grid and blur passes, call after
    call (keep one per CRF module; not thread-safe). Fresh multi-MB tensors for every filtering page-fault
    each time: at 500x375 that cost ~3 ms of a 10-14 ms CRF."""

    def __init__(self) -> None:
        self._buffers: list[Tensor | None] = [None, None]

    def buffer(self, i: int, numel: int, like: Tensor) -> Tensor:
        """The first ``numel`` elements of buffer ``i`` (0 or 1), with ``like``'s dtype and device; contents
        undefined."""
        b = self._buffers[i]
        if b is None or b.numel() < numel or b.dtype != like.dtype or b.device != like.device:
            b = torch.empty(numel, dtype=like.dtype, device=like.device)
            self._buffers[i] = b
        return b[:numel]


def avg_pool(x: Tensor, s: int) -> Tensor:
    """``s x s`` average pooling of [N,C,H,W] -> [N,C,ceil(H/s),ceil(W/s)], ceil mode, averaging only the pixels
    inside the image at an odd border (``avg_pool2d(x, s, s, ceil_mode=True, count_include_pad=False)``). For
    s = 2 in eager torch by four strided slices of the edge-padded map (cheaper than avg_pool2d there)."""
    if s == 1:
        return x
    if s != 2 or torch.onnx.is_in_onnx_export():  # (the slices' odd-size padding would trace as constants)
        return F.avg_pool2d(x, s, s, ceil_mode=True, count_include_pad=False)
    h, w = x.shape[-2], x.shape[-1]
    x = F.pad(x, (0, w % 2, 0, h % 2), mode="replicate")
    return (x[..., 0::2, 0::2] + x[..., 1::2, 0::2] + x[..., 0::2, 1::2] + x[..., 1::2, 1::2]).mul_(0.25)


class BilateralGrid:
    """The grid of one batch of images. ``image`` [N,3,H,W] float32 0..255; ``sxy`` pixels, ``srgb`` colour units.

    ``filter(q [N,C,H,W]) -> [N,C,H,W]``: the normalised bilateral filtering of ``q`` (row sums 1).
    ``workspace``: reuse its buffers (eager; ignored under ONNX export).
    """

    def __init__(self, image: Tensor, sxy: float, srgb: float, workspace: GridWorkspace | None = None) -> None:
        n, _, h, w = image.shape
        self.shape = (n, h, w)
        self.workspace = workspace
        dev = image.device
        # spatial cells of a whole number of pixels, so that the grid's size is integer arithmetic on H and W
        # (symbolic under ONNX export: the exported grid follows the input size)
        cell = max(1, int(round(CELL_XY * sxy)))
        ys = (torch.arange(h, device=dev) + cell // 2) // cell  # [H] nearest cell centre
        xs = (torch.arange(w, device=dev) + cell // 2) // cell  # [W]
        step_c = CELL_RGB * srgb
        cells_c = int(math.floor(255.0 / step_c + 0.5)) + 3
        gy, gx = (h - 1 + cell // 2) // cell + 3, (w - 1 + cell // 2) // cell + 3
        self.dims = (n, gy, gx, cells_c, cells_c, cells_c)
        self.cells = gy * gx * cells_c ** 3  # one image's padded grid
        # colour cell [N,3,H,W] without padding, kept in float: the colour part of a flat index (< 2^24) is
        # exact in float32, and one conversion to int64 per index is much cheaper than int64 arithmetic
        c = torch.round(image.clamp(0.0, 255.0) / step_c)
        batch = torch.arange(n, device=dev).view(n, 1, 1)
        cy, cx = ys.view(1, h, 1), xs.view(1, 1, w)
        # slice: the blurred grid without its pads; splat: the padded grid (every coordinate + 1) in eager torch,
        # the grid without pads under ONNX export (its blur zero-pads implicitly, see ``_blur_matmul``)
        self.slice_index = self._flat(batch, cy, cx, c, (gy - 2, gx - 2, cells_c - 2)).reshape(-1)
        self.splat_index = (self.slice_index if torch.onnx.is_in_onnx_export()
                            else self._flat(batch, cy + 1, cx + 1, c + 1.0, (gy, gx, cells_c)).reshape(-1))
        ones = torch.ones(1, n * h * w, device=dev, dtype=image.dtype)
        self.inv_norm = 1.0 / self._slice(self._blur(ones))  # [1, N*H*W]: 1 / the kernel's row sums
        self._scaled: dict[float, Tensor] = {1.0: self.inv_norm}

    @staticmethod
    def _flat(batch: Tensor, y: Tensor, x: Tensor, c: Tensor, dims: tuple[int, int, int]) -> Tensor:
        """Flat int64 cell index [N,H,W] of spatial cells ``y`` [1,H,1], ``x`` [1,1,W] (int64) and colour cells
        ``c`` [N,3,H,W] (float, whole numbers) in a grid of ``dims`` (gy, gx, gc) per image."""
        gy, gx, gc = dims
        colour = (c[:, 0] * gc + c[:, 1]) * gc + c[:, 2]  # [N,H,W] float, exact
        return ((batch * gy + y) * gx + x) * (gc ** 3) + colour.long()

    def _blur(self, values: Tensor) -> Tensor:
        """values [C, N*H*W] -> splat and blur -> the blurred grid without pads, [C, cells].

        Each [1, 2, 1] pass along an axis keeps only the inner cells of that axis: the pad cells then hold
        mass that no pixel reads and that no later pass moves back along that axis, so dropping them is exact;
        the filter's 1/4 keeps the grid's values within the splatted sums (no overflow in an fp16 export).
        With a workspace (eager, float32/64 only), the grid and the blur passes reuse its buffers (the result
        is valid until the next call) and are 4^5 times larger (the division by the row sums cancels it)."""
        ch = values.shape[0]
        total = self.dims[0] * self.cells
        exporting = torch.onnx.is_in_onnx_export()
        wide = values.dtype in (torch.float32, torch.float64)
        ws = None if exporting or not wide else self.workspace
        index = self.splat_index.view(1, -1).expand(ch, -1)
        if exporting:  # the grid without pads (~3x fewer cells at 256x256: a cheaper zero fill, scatter and blur)
            inner = tuple(d - 2 for d in self.dims[1:])
            grid = torch.zeros(ch, self.dims[0] * math.prod(inner), device=values.device, dtype=values.dtype)
            g = grid.scatter_add(1, index, values).view(ch, self.dims[0], *inner)
            return self._blur_matmul(g).reshape(ch, -1)
        if ws is None:
            grid = torch.zeros(ch, total, device=values.device, dtype=values.dtype)
            g = grid.scatter_add(1, index, values).view(ch, *self.dims)
        else:
            g = ws.buffer(0, ch * total, values).zero_().view(ch, total).scatter_add_(1, index, values)
            g = g.view(ch, *self.dims)
        for i, axis in enumerate(range(2, 7)):  # [C, N, gy, gx, c, c, c]
            n_ax = g.shape[axis]
            lo, hi, mid = g.narrow(axis, 0, n_ax - 2), g.narrow(axis, 2, n_ax - 2), g.narrow(axis, 1, n_ax - 2)
            if ws is None:
                g = (lo + hi).mul_(0.25).add_(mid, alpha=0.5)
            else:  # ping-pong between two buffers: pass i reads one and writes the other; [1, 2, 1] without
                # the 1/4 (one pass less; the 4^5 cancels in the division by the row sums, fp32 range)
                out = ws.buffer(1 - i % 2, lo.numel(), values).view(lo.shape)
                g = torch.add(lo, hi, out=out).add_(mid, alpha=2.0)
        return g.reshape(ch, -1)

    @staticmethod
    def _blur_matmul(g: Tensor) -> Tensor:
        """The five [1, 2, 1] / 4 passes of the padded grid, on the grid without its pads: products with
        tridiagonal n x n matrices (the zero pads implicit), the ONNX form (``MatMul``; in ONNX Runtime 2.3x faster
        than the Slice/Add passes on one thread, 7x on two; in eager torch the passes are faster).
        g [C, N, gy-2, gx-2, c-2, c-2, c-2] -> the same shape (the eager passes' output)."""
        for axis in range(2, 7):
            shape = g.shape
            n = shape[axis]
            rows = torch.arange(n, device=g.device).view(-1, 1)
            cols = torch.arange(n, device=g.device).view(1, -1)
            band = ((cols == rows - 1).to(g.dtype) + (cols == rows + 1).to(g.dtype)) * 0.25 + (
                cols == rows).to(g.dtype) * 0.5  # [n, n], symmetric
            if axis == 6:
                g = torch.matmul(g, band)
            else:
                lead = 1
                for d in shape[:axis]:
                    lead = lead * d
                g = torch.matmul(band, g.reshape(lead, n, -1)).reshape(shape)
        return g

    def _slice(self, blurred: Tensor) -> Tensor:
        """blurred [C, cells] -> its values at every pixel's cell -> [C, N*H*W]."""
        return blurred.gather(1, self.slice_index.view(1, -1).expand(blurred.shape[0], -1))

    def filter(self, q: Tensor, weight: float = 1.0) -> Tensor:
        """q [N,C,H,W] -> normalised bilateral filtering [N,C,H,W], times ``weight`` (folded into the row sums'
        reciprocals once per grid)."""
        n, h, w = self.shape
        c = q.shape[1]
        if weight not in self._scaled:
            self._scaled[weight] = self.inv_norm * weight
        vals = q.permute(1, 0, 2, 3).reshape(c, n * h * w)
        out = self._slice(self._blur(vals)) * self._scaled[weight]
        return out.view(c, n, h, w).permute(1, 0, 2, 3)
