"""torchvision Faster R-CNN / Mask R-CNN on a pretrained run's ResNet, in the MoCo detection setting.

Two layouts (``arch``):

- ``c4`` (the papers' protocol, detectron2's R50-C4): the RPN and the RoI pooling (RoIAlign 14x14) read
  ``res4`` (stem + layer1..3); the box head is ``res5`` (layer4) on each RoI, followed by an extra
  BatchNorm (MoCo: "an extra BN after res5", so the head's features are normalised whatever scale the
  pretraining left them in), global average pooling and the box predictor. For Mask R-CNN the mask
  branch runs the *same* ``res5`` + norm on its RoIs and upsamples 7 -> 14 with one 2x2
  deconvolution (detectron2's C4 mask head with no extra convs).
- ``fpn``: torchvision's ``BackboneWithFPN`` over layer1..4 (plus max-pooled P6) with its default
  two-MLP box head and four-conv mask head. FPN width is ``min(256, channels of res4)`` so that
  the narrow CPU backbones do not get a pyramid wider than themselves.

Every backbone parameter is trained (detectron2's ``FREEZE_AT 0``) and every norm is a real
``BatchNorm2d`` in training mode, not torchvision's ``FrozenBatchNorm2d`` default: frozen statistics of
an SSL backbone do not match the detection images. When several processes train (torchrun) the norms
are synchronised over the global batch (the paper's SyncBN; ``use_sync_bn``).

Input: a list of float images [3, H, W] in [0, 1]; torchvision's transform resizes them so the short
side is one of ``min_size`` (random per image in training, the last in evaluation), the long side at
most ``max_size``, and normalises with the ImageNet mean/std used in pretraining.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn as nn
from torchvision.models.detection import FasterRCNN, MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNPredictor
from torchvision.ops import MultiScaleRoIAlign

from cssl_bench import UserError

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
ARCHS = ("c4", "fpn")
TASKS = ("box", "instance")
PAPER_ANCHORS = (32, 64, 128, 256, 512)  # detectron2's defaults at an 800-px short side


def stage_channels(layer: nn.Sequential) -> int:
    """Output channels of a ResNet stage (its last block's last BatchNorm)."""
    last = layer[-1]
    bn = getattr(last, "bn3", None) or last.bn2
    return bn.num_features


class C4Body(nn.Module):
    """stem + layer1..3 of a ResNet: images [B, 3, H, W] -> {"0": res4 features [B, C4, H/16, W/16]}
    (H/4 with the CIFAR stem, which has no stride in its stem)."""

    def __init__(self, resnet: nn.Module):
        super().__init__()
        self.stem = nn.Sequential(resnet.conv1, resnet.bn1, resnet.relu, resnet.maxpool)
        self.layer1, self.layer2, self.layer3 = resnet.layer1, resnet.layer2, resnet.layer3
        self.out_channels = stage_channels(resnet.layer3)

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict([("0", self.layer3(self.layer2(self.layer1(self.stem(x)))))])


class Res5Head(nn.Module):
    """RoI features [R, C4, 14, 14] -> res5 (+ extra BN) -> [R, C5, 7, 7]; ``pool`` adds global average pooling -> [R, C5]."""

    def __init__(self, layer4: nn.Module, norm: nn.Module, pool: bool):
        super().__init__()
        self.res5, self.norm, self.pool = layer4, norm, pool

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.norm(self.res5(x))
        return x.mean(dim=(2, 3)) if self.pool else x


def anchor_sizes(test_size: int) -> tuple[int, ...]:
    """detectron2's anchors (32..512 px at an 800-px short side) scaled to ``test_size``, at least 2 px:
    the anchors cover the same fractions of the image as in the paper protocol."""
    return tuple(max(2, round(a * test_size / 800)) for a in PAPER_ANCHORS)


def build_detector(
    resnet: nn.Module,
    num_classes: int,
    arch: str = "c4",
    task: str = "box",
    *,
    min_size=(800,),
    max_size: int = 1333,
    anchors: tuple[int, ...] | None = None,
    extra_norm: bool = True,
    roi_size: int = 14,
    roi_batch: int = 512,
    rpn_batch: int = 256,
    rpn_pre_nms_train: int = 12000,
    rpn_post_nms_train: int = 2000,
    rpn_pre_nms_test: int = 6000,
    rpn_post_nms_test: int = 1000,
    detections_per_image: int = 100,
) -> nn.Module:
    """Faster R-CNN (``task="box"``) or Mask R-CNN (``"instance"``) for ``num_classes`` object classes
    (plus background) on ``resnet``, which is used in place (pass a copy to keep the original).

    ``roi_size``: RoIAlign output of the C4 head (detectron2: 14, halved by res5's stride to 7) and of
    the FPN mask head; the FPN box head pools ``roi_size // 2`` (torchvision: 7)."""
    from cssl_bench.nn.backbones import is_resnet

    if arch not in ARCHS:
        raise UserError(f"unknown --arch {arch!r}; choose from {', '.join(ARCHS)}", exit_code=2)
    if task not in TASKS:
        raise UserError(f"unknown --task {task!r}; choose from {', '.join(TASKS)}", exit_code=2)
    if not is_resnet(resnet):
        raise UserError("detection transfer needs a ResNet backbone (conv1, bn1, layer1..4)")
    min_size = tuple(int(s) for s in (min_size if isinstance(min_size, (tuple, list)) else (min_size,)))
    anchors = tuple(anchors or anchor_sizes(min_size[-1]))
    common = dict(
        num_classes=num_classes + 1,
        min_size=min_size,
        max_size=max_size,
        image_mean=IMAGENET_MEAN,
        image_std=IMAGENET_STD,
        rpn_pre_nms_top_n_train=rpn_pre_nms_train,
        rpn_post_nms_top_n_train=rpn_post_nms_train,
        rpn_pre_nms_top_n_test=rpn_pre_nms_test,
        rpn_post_nms_top_n_test=rpn_post_nms_test,
        rpn_batch_size_per_image=rpn_batch,
        box_batch_size_per_image=roi_batch,
        box_detections_per_img=detections_per_image,
    )
    if arch == "c4":
        body = C4Body(resnet)
        c5 = stage_channels(resnet.layer4)
        norm = nn.BatchNorm2d(c5) if extra_norm else nn.Identity()
        generator = AnchorGenerator(sizes=(anchors,), aspect_ratios=((0.5, 1.0, 2.0),))
        kw = dict(
            rpn_anchor_generator=generator,
            box_roi_pool=MultiScaleRoIAlign(["0"], roi_size, 0),
            box_head=Res5Head(resnet.layer4, norm, pool=True),
            box_predictor=FastRCNNPredictor(c5, num_classes + 1),
        )
        common["num_classes"] = None  # given by our own predictors
        if task == "box":
            return FasterRCNN(body, **common, **kw)
        return MaskRCNN(
            body,
            **common,
            **kw,
            mask_roi_pool=MultiScaleRoIAlign(["0"], roi_size, 0),
            mask_head=Res5Head(resnet.layer4, norm, pool=False),  # shares res5 and its norm with the box head
            mask_predictor=MaskRCNNPredictor(c5, 256, num_classes + 1),
        )
    channels = [stage_channels(getattr(resnet, f"layer{i}")) for i in (1, 2, 3, 4)]
    body = BackboneWithFPN(resnet, {f"layer{i}": str(i - 1) for i in (1, 2, 3, 4)}, channels, min(256, channels[2]))
    generator = AnchorGenerator(sizes=tuple((a,) for a in anchors), aspect_ratios=((0.5, 1.0, 2.0),) * len(anchors))
    levels, box_res = ["0", "1", "2", "3"], max(1, roi_size // 2)
    kw = dict(
        rpn_anchor_generator=generator,
        box_roi_pool=MultiScaleRoIAlign(levels, box_res, 2),
        box_head=TwoMLPHead(body.out_channels * box_res**2, 1024),
    )
    if task == "box":
        return FasterRCNN(body, **common, **kw)
    return MaskRCNN(body, **common, **kw, mask_roi_pool=MultiScaleRoIAlign(levels, roi_size, 2))


def use_sync_bn(model: nn.Module, device_type: str) -> nn.Module:
    """BatchNorm -> synchronised BatchNorm when several processes train (the paper's SyncBN):
    ``nn.SyncBatchNorm`` on GPUs, the project's ``GlobalBatchNorm`` on CPUs (gloo)."""
    from cssl_bench.nn.distributed import is_dist, world_size
    from cssl_bench.nn.norm import convert_sync_batchnorm

    if is_dist() and world_size() > 1:
        return convert_sync_batchnorm(model, device_type)
    return model
