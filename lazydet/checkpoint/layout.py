"""Where the parts that checkpoints name live inside a lazydet model.

A checkpoint from another library names parts by its own module tree (``backbone.body``,
``rpn.head``, ``roi_heads.box_head.fc6``). Rather than hard-coding lazydet's attribute paths, the
converters ask the model: ``ModelLayout.of(model)`` walks the module tree once and records the
qualified name of each part it recognises by class (ResNet, FPN, RPN head, ROI heads, RetinaNet
head, ...). So the conversion keeps working when a meta-architecture names an attribute
differently or a config nests a backbone deeper, and it can read per-model facts such as the FPN's
``in_features`` (which decide where a torchvision ``inner_blocks.i`` goes).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from torch import nn

__all__ = ["ModelLayout", "SequentialLayers"]


def _is(module: nn.Module, class_name: str) -> bool:
    # By class name along the MRO: no import of the heads (their modules may not be loaded, and
    # subclasses are still recognised).
    return any(cls.__name__ == class_name for cls in type(module).__mro__)


def _is_norm(module: nn.Module) -> bool:
    norms = (nn.GroupNorm, nn.BatchNorm2d, nn.SyncBatchNorm, nn.LayerNorm)
    return isinstance(module, norms) or _is(module, "FrozenBatchNorm2d")


# Buffers that are lazydet training state, by the class that registers them: torchvision and
# Detectron2 keep the equivalent as a plain attribute (or not at all), so their checkpoints never
# hold it. RetinaNet's loss-normaliser EMA of the foreground-anchor count is one.
_TRAINING_STATE = {"RetinaNet": ("foreground_ema",)}


def _prefix(name: str) -> str:
    return f"{name}." if name else ""


@dataclass
class SequentialLayers:
    """Qualified names of a head's layers, in forward order.

    ``convs[i]`` is the i-th ``nn.Conv2d``, ``norms[i]`` the normalisation module right after it
    (None when the conv is followed directly by an activation), ``linears[i]`` the i-th
    ``nn.Linear``.
    """

    convs: list[str] = field(default_factory=list)
    norms: list[str | None] = field(default_factory=list)
    linears: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, module: nn.Module, prefix: str) -> SequentialLayers:
        layers = cls()
        children = list(module.named_modules())
        for index, (name, child) in enumerate(children):
            if not name:
                continue
            if type(child) is nn.Conv2d:
                layers.convs.append(prefix + name)
                following = children[index + 1] if index + 1 < len(children) else None
                is_norm = following is not None and _is_norm(following[1])
                layers.norms.append(prefix + following[0] if is_norm else None)
            elif type(child) is nn.Linear:
                layers.linears.append(prefix + name)
        return layers


def _layers_of_body(head: nn.Module, prefix: str) -> SequentialLayers:
    """The layers of a head's trunk: its ``convs`` or ``layers`` Sequential (not its predictors)."""
    for body_name in ("convs", "layers"):
        body = getattr(head, body_name, None)
        if isinstance(body, nn.Module):
            return SequentialLayers.of(body, f"{prefix}{body_name}.")
    return SequentialLayers.of(head, prefix)


@dataclass
class ModelLayout:
    """Prefixes (``"backbone.bottom_up."``) of the parts of a model, or None when absent."""

    resnet: str | None = None
    fpn: str | None = None
    fpn_in_features: tuple[str, ...] = ()
    p6p7: str | None = None  # a LastLevelP6P7, in the FPN or on the RetinaNet meta-architecture
    rpn_head: str | None = None
    rpn_head_layers: SequentialLayers | None = None
    box_head: str | None = None
    box_head_layers: SequentialLayers | None = None
    box_predictor: str | None = None
    mask_head: str | None = None
    mask_head_layers: SequentialLayers | None = None
    keypoint_head: str | None = None
    keypoint_head_layers: SequentialLayers | None = None
    retinanet_head: str | None = None
    # Foreground classes of the ROI heads' box predictor and of the RetinaNet head.
    roi_num_classes: int | None = None
    retinanet_num_classes: int | None = None
    # Qualified names of training-state buffers (see _TRAINING_STATE) present in the model.
    training_state: list[str] = field(default_factory=list)

    @classmethod
    def of(cls, model: nn.Module) -> ModelLayout:
        layout = cls()
        for name, module in model.named_modules():
            prefix = _prefix(name)
            for class_name, buffers in _TRAINING_STATE.items():
                if _is(module, class_name):
                    own = dict(module.named_buffers(recurse=False))
                    layout.training_state += [prefix + b for b in buffers if b in own]
            if _is(module, "ResNet") and layout.resnet is None:
                layout.resnet = prefix
            elif _is(module, "FPN") and layout.fpn is None:
                layout.fpn = prefix
                layout.fpn_in_features = tuple(getattr(module, "in_features", ()))
            elif _is(module, "LastLevelP6P7") and layout.p6p7 is None:
                layout.p6p7 = prefix
            elif _is(module, "StandardRPNHead") and layout.rpn_head is None:
                layout.rpn_head = prefix
                layout.rpn_head_layers = _layers_of_body(module, prefix)
            elif _is(module, "RetinaNetHead") and layout.retinanet_head is None:
                layout.retinanet_head = prefix
                layout.retinanet_num_classes = getattr(module, "num_classes", None)
            elif _is(module, "StandardROIHeads"):
                layout.roi_num_classes = getattr(module, "num_classes", None)
                for part in ("box_head", "box_predictor", "mask_head", "keypoint_head"):
                    child = getattr(module, part, None)
                    if isinstance(child, nn.Module):
                        child_prefix = f"{prefix}{part}."
                        setattr(layout, part, child_prefix)
                        if part != "box_predictor":
                            layers = _layers_of_body(child, child_prefix)
                            setattr(layout, f"{part}_layers", layers)
        return layout
