"""An inference copy of a ``GuidedNet``: batch norm folded into the convolutions before it, channels-last memory.

In eval mode a ``BatchNorm2d`` after a convolution is an affine map per channel, so it folds into that
convolution's weight and bias (``torch.nn.utils.fusion.fuse_conv_bn_eval``); the encoder then does one pass over
each feature map where it did two. Together with channels-last (NHWC) tensors, which oneDNN's CPU convolutions
and cuDNN prefer, the EfficientNet-Lite0 query branch at 256 px ran about 1.4x faster on 2 CPU threads
(``bench/segment.py`` prints the ratio side by side). The outputs equal the eager model's to float rounding.

- ``fold_batchnorm(encoder) -> torch.fx.GraphModule``: a traced copy with every conv -> BN pair folded (any
  ``nn.Conv2d`` subclass, e.g. EfficientNet-Lite's "SAME"-padding conv, is kept whole as a leaf); the input
  module is not changed. It must be in eval mode (folding uses the running statistics).
- ``inference_copy(model) -> GuidedNet``: a deep copy in eval mode, encoder folded, EfficientNet-Lite's "SAME"
  convolutions made single convolutions with symmetric padding (``SymmetricPadConv``: no padded copy of each
  input), parameters without grad, channels-last. For inference only: train the original, then make a new copy
  (``vision.torch_backend`` does so when the original's tensors change in place).
"""

from __future__ import annotations

import copy

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from models.efficientnet_lite import SamePadConv, SymmetricPadConv
from models.guided_net import GuidedNet

__all__ = ["fold_batchnorm", "inference_copy"]


class _ConvLeafTracer(fx.Tracer):
    """Traces through everything but modules of torch.nn and subclasses of ``nn.Conv2d`` (kept as one call)."""

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:
        return isinstance(m, nn.Conv2d) or super().is_leaf_module(m, module_qualified_name)


def _set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, new)


def fold_batchnorm(encoder: nn.Module) -> fx.GraphModule:
    """encoder (eval mode) -> a traced copy whose conv -> BatchNorm2d pairs are folded into single convs.

    A BN whose input is not a conv, or a conv whose output also goes elsewhere, is kept as it is.
    """
    if encoder.training:
        raise ValueError("fold_batchnorm needs a module in eval mode (it folds the running statistics)")
    root = copy.deepcopy(encoder)
    graph = _ConvLeafTracer().trace(root)
    modules = dict(root.named_modules())
    for node in list(graph.nodes):
        if node.op != "call_module" or type(modules.get(node.target)) is not nn.BatchNorm2d:
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or len(src.users) > 1:
            continue
        conv, bn = modules.get(src.target), modules[node.target]
        if not isinstance(conv, nn.Conv2d) or not bn.track_running_stats:
            continue
        _set_module(root, src.target, fuse_conv_bn_eval(conv, bn))
        node.replace_all_uses_with(src)
        graph.erase_node(node)
    graph.lint()
    return fx.GraphModule(root, graph)


def inference_copy(model: GuidedNet, symmetric_pad: bool = True) -> GuidedNet:
    """A copy of ``model`` for inference: eval mode, encoder BN folded, "SAME" padding inside its convolutions
    (``symmetric_pad=False``: kept as ``F.pad`` + convolution, for ``bench/segment.py``'s comparison), no grad,
    channels-last memory format."""
    fast = copy.deepcopy(model).eval()
    fast.encoder = fold_batchnorm(fast.encoder)
    if symmetric_pad:
        for name, m in list(fast.encoder.named_modules()):
            if isinstance(m, SamePadConv):
                _set_module(fast.encoder, name, SymmetricPadConv(m))
    for p in fast.parameters():
        p.requires_grad_(False)
    return fast.to(memory_format=torch.channels_last)

