"""The floor the models share, one home each: ``ShapeSpec``, the norm factory, the
conv-norm-activation block, weight inits and the "module or factory" builder.

Nothing in ``lazydet.modeling`` re-implements these; this package imports only torch and
torchvision.
"""

from lazydet.layers.build import ModuleOrFactory, build_module
from lazydet.layers.conv import conv_norm_act, conv_norm_act_stack
from lazydet.layers.norm import NORM_NAMES, ChannelLayerNorm, NormSpec, get_norm, has_norm
from lazydet.layers.shape_spec import ShapeSpec, check_positive_sizes
from lazydet.layers.weight_init import caffe2_msra_fill, caffe2_xavier_fill, normal_fill

__all__ = [
    "NORM_NAMES",
    "ChannelLayerNorm",
    "ModuleOrFactory",
    "NormSpec",
    "ShapeSpec",
    "build_module",
    "caffe2_msra_fill",
    "caffe2_xavier_fill",
    "check_positive_sizes",
    "conv_norm_act",
    "conv_norm_act_stack",
    "get_norm",
    "has_norm",
    "normal_fill",
]
