"""Detection transfer (SimSiam Table 5; docs/protocols.md, section 3).

- ``finetune``: the built-in adapter (torchvision Faster R-CNN / Mask R-CNN, C4 or FPN, trainable
  synchronised BN) with its named protocols and result records;
- ``datasets``: VOC XML and COCO JSON readers (and ``embedded-det``, the CPU stand-in);
- ``evaluate``: AP, AP50, AP75: VOC as detectron2's VOC2007 evaluator, COCO (and mask APs) with pycocotools;
- ``configs/``: detectron2 configs after the MoCo detection configs, for weights written by
  ``cssl-bench export RUN --to detectron2``; ``detectron2_train`` runs them.
"""

from pathlib import Path

CONFIG_DIR = Path(__file__).parent / "configs"
