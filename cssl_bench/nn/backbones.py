"""Backbones: torchvision ResNets, width-scaled ResNets for CPU scales, and any timm model.

``build_backbone`` returns an ``nn.Module`` whose forward gives pooled features [N, out_dim] and
which carries ``out_dim``. Names:

- ``resnet18``, ``resnet34``, ``resnet50``: torchvision's modules (state dicts load into
  ``torchvision.models.resnetXX()``), ``fc`` replaced by identity.
- ``resnet18-w0.25``, ``resnet10-w0.5``, ...: the same BasicBlock/Bottleneck design with every stage's
  width multiplied (the CPU scales; torchvision key names are kept).
- ``timm:NAME`` or any other timm model name: ``timm.create_model(NAME, num_classes=0)``.

The CIFAR stem (3x3 conv, stride 1, no max-pool) is used for inputs of 64 px and less unless
``cifar_stem`` says otherwise (it applies to ResNets only). ``is_resnet`` / ``uses_cifar_stem`` tell a
built backbone's layout (export and detection transfer need torchvision's ResNet layout).
"""

from __future__ import annotations

import re

import torch.nn as nn
import torchvision
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

from cssl_bench import UserError

_DEPTHS = {
    10: (BasicBlock, [1, 1, 1, 1]),
    18: (BasicBlock, [2, 2, 2, 2]),
    34: (BasicBlock, [3, 4, 6, 3]),
    50: (Bottleneck, [3, 4, 6, 3]),
    101: (Bottleneck, [3, 4, 23, 3]),
}
_NAME = re.compile(r"^resnet(\d+)(?:-w([0-9.]+))?$")


class ScaledResNet(ResNet):
    """torchvision's ResNet with every stage width multiplied by ``width`` (stem included)."""

    def __init__(self, block, layers, width: float = 1.0, zero_init_residual: bool = False):
        nn.Module.__init__(self)
        self._norm_layer = nn.BatchNorm2d
        self.dilation, self.groups, self.base_width = 1, 1, 64
        w = [max(4, int(round(c * width))) for c in (64, 128, 256, 512)]
        self.inplanes = w[0]
        self.conv1 = nn.Conv2d(3, w[0], 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(w[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, w[0], layers[0])
        self.layer2 = self._make_layer(block, w[1], layers[1], stride=2)
        self.layer3 = self._make_layer(block, w[2], layers[2], stride=2)
        self.layer4 = self._make_layer(block, w[3], layers[3], stride=2)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(w[3] * block.expansion, 1000)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        if zero_init_residual:
            _zero_init_residual(self)


def is_resnet(backbone: nn.Module) -> bool:
    """True for torchvision-style ResNets (torchvision's own and ``ScaledResNet``): conv1, bn1, layer1..4."""
    return all(hasattr(backbone, n) for n in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4"))


def uses_cifar_stem(backbone: nn.Module) -> bool:
    """True for a torchvision-style ResNet built with the CIFAR stem (3x3 ``conv1``)."""
    return is_resnet(backbone) and backbone.conv1.kernel_size == (3, 3)


def _zero_init_residual(model: nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, Bottleneck):
            nn.init.zeros_(m.bn3.weight)
        elif isinstance(m, BasicBlock):
            nn.init.zeros_(m.bn2.weight)


def _cifar_stem(model: ResNet) -> None:
    c = model.conv1.out_channels
    model.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()


def build_backbone(
    name: str, image_size: int = 224, cifar_stem: bool | None = None, zero_init_residual: bool = False
) -> nn.Module:
    """Build a feature extractor; see the module docstring for names."""
    use_cifar = image_size <= 64 if cifar_stem is None else cifar_stem
    m = _NAME.match(name)
    if m:
        depth, width = int(m.group(1)), float(m.group(2) or 1.0)
        if depth not in _DEPTHS:
            raise UserError(f"unknown ResNet depth {depth}; choose from {', '.join(map(str, _DEPTHS))}", exit_code=2)
        block, layers = _DEPTHS[depth]
        if width == 1.0 and hasattr(torchvision.models, f"resnet{depth}"):
            model = getattr(torchvision.models, f"resnet{depth}")(weights=None, zero_init_residual=zero_init_residual)
        else:
            model = ScaledResNet(block, layers, width, zero_init_residual)
        out_dim = model.fc.in_features
        model.fc = nn.Identity()
        if use_cifar:
            _cifar_stem(model)
        model.out_dim = out_dim
        model.arch = f"resnet{depth}" + (f"-w{width:g}" if width != 1.0 else "")
        return model
    import timm

    timm_name = name[5:] if name.startswith("timm:") else name
    if timm_name not in timm.list_models():
        raise UserError(
            f"unknown backbone {name!r}; use resnet18, resnet50, resnet18-w0.25 (any depth 10/18/34/50/101 and width) or a timm model name",
            exit_code=2,
        )
    model = timm.create_model(timm_name, pretrained=False, num_classes=0)
    if use_cifar and hasattr(model, "conv1") and hasattr(model, "maxpool") and isinstance(model.conv1, nn.Conv2d):
        c = model.conv1.out_channels
        model.conv1 = nn.Conv2d(3, c, 3, 1, 1, bias=False)
        model.maxpool = nn.Identity()
    model.out_dim = model.num_features
    model.arch = f"timm:{timm_name}"
    return model
