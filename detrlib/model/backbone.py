"""The CNN backbone: a torchvision ResNet whose last feature map becomes the transformer's input.

As in DETR, BatchNorm is frozen (``FrozenBatchNorm2d``), the stem and ``layer1`` are not trained, and ``dilation``
trades ``layer4``'s stride for a finer map. For a model trained from scratch on a CPU, detrlib adds ``stages`` (cuts
the ResNet short: 4 -> stride 32, 3 -> 16, 2 -> 8), ``frozen_bn=False`` (ordinary BatchNorm) and ``frozen_stages=0``
(trains everything). ``return_stages`` keeps several maps, for multi-scale models (:meth:`Backbone.feature_maps`);
``pretrained`` ImageNet weights are read as data only (:func:`imagenet_weights`)."""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
import torchvision
from torch import nn
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.ops import FrozenBatchNorm2d

from detrlib.errors import CheckpointError
from detrlib.model.registry import register

RESNETS = {"resnet18": 64, "resnet34": 64, "resnet50": 256, "resnet101": 256}  # layer1's channels


def imagenet_weights(name: str) -> dict:
    """torchvision's ImageNet weights of the ResNet ``name`` as a state_dict, read as data only
    (``weights_only=True``) so that a file planted in the cache cannot run code. They live where torchvision keeps
    them, torch's hub cache, and are downloaded there once, checked against the SHA-256 prefix in their file name."""
    url = torchvision.models.get_model_weights(name).IMAGENET1K_V1.url
    path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(url, str(path), hash_prefix=torch.hub.HASH_REGEX.search(path.name).group(1))
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch reports a damaged file, or one holding code, in several exception types
        raise CheckpointError(f"{path} cannot be read as {name}'s ImageNet weights: it is damaged, or holds "
                              "Python objects beyond tensors, which could run code and detrlib refuses; delete it, "
                              "and it is downloaded again") from None


class Backbone(nn.Module):
    """``(images [B, 3, H, W], mask [B, H, W] | None)`` -> the last stage's ``(features [B, C, h, w], mask)``."""

    def __init__(self, name: str = "resnet50", stages: int = 4, dilation: bool = False,
                 frozen_bn: bool = True, frozen_stages: int = 1, pretrained: bool = False, return_stages: int = 1):
        super().__init__()  # ModelConfig checks the stages and the dilation
        resnet = getattr(torchvision.models, name)(replace_stride_with_dilation=[False, False, dilation],
                                                   norm_layer=FrozenBatchNorm2d if frozen_bn else nn.BatchNorm2d)
        if pretrained:  # what torchvision's weights= does, without its pickle loader
            resnet.load_state_dict(imagenet_weights(name))
        # channels-last (NHWC) convolutions are much faster on CPUs (oneDNN) and on tensor cores
        returned = range(stages - return_stages + 1, stages + 1)
        self.body = IntermediateLayerGetter(resnet, return_layers={f"layer{i}": str(i) for i in returned}).to(
            memory_format=torch.channels_last)
        self.channels = [RESNETS[name] * 2 ** (i - 1) for i in returned]  # of each returned stage
        self.num_channels = self.channels[-1]
        # the stem and layer1..layerk when frozen_stages = k > 0
        self.frozen = ["conv1", "bn1"] + [f"layer{i}" for i in range(1, frozen_stages + 1)] if frozen_stages else []
        for pname, p in self.body.named_parameters():
            if pname.split(".")[0] in self.frozen:
                p.requires_grad_(False)

    @classmethod
    def from_config(cls, cfg):
        return cls(cfg.backbone, cfg.backbone_stages, cfg.dilation, cfg.frozen_bn, cfg.frozen_stages,
                   cfg.pretrained_backbone)

    def train(self, mode: bool = True):
        """Ordinary BatchNorm in a frozen stage keeps its running statistics too."""
        super().train(mode)
        for name in self.frozen:
            getattr(self.body, name, nn.Identity()).train(False)
        return self

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None):
        return self.feature_maps(images, mask)[-1]

    def feature_maps(self, images: torch.Tensor, mask: torch.Tensor | None = None) -> list[tuple]:
        """``(features, mask)`` of each of the ``return_stages`` last stages, finest first."""
        maps = self.body(images.contiguous(memory_format=torch.channels_last)).values()
        return [(f, None if mask is None else F.interpolate(mask[None].float(), size=f.shape[-2:]).to(torch.bool)[0])
                for f in maps]


class Joiner(nn.Sequential):
    """Backbone and position encoding side by side, named ``backbone.0`` and ``backbone.1`` as in the official
    checkpoint. Returns ``(features, mask, pos)``, ``pos [B or 1, d, h, w]``."""

    def __init__(self, backbone: Backbone, position_embedding: nn.Module):
        super().__init__(backbone, position_embedding)
        self.num_channels = backbone.num_channels

    def forward(self, images: torch.Tensor, mask: torch.Tensor | None = None):
        features, mask = self[0](images, mask)
        return features, mask, self[1](features, mask).to(features.dtype)


for _resnet in RESNETS:  # ModelConfig.backbone names a torchvision ResNet
    register("backbone", _resnet)(Backbone)
