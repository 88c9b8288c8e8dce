"""Fine-tune exported cssl-bench weights with detectron2 (the papers' detection protocol; detectron2 required).

    cssl-bench export RUN_DIR --to detectron2 r50.pkl
    python -m cssl_bench.eval.detection.detectron2_train --num-gpus 8 \\
        --config-file $(cssl-bench transfer configs)/voc0712_R_50_C4_24k.yaml MODEL.WEIGHTS r50.pkl OUTPUT_DIR out/voc0712

Configs (``cssl-bench transfer configs`` prints their folder): ``voc07_R_50_C4.yaml``,
``voc0712_R_50_C4_24k.yaml`` (Faster R-CNN R50-C4) and ``coco_R_50_C4_1x.yaml`` (Mask R-CNN R50-C4
1x). Datasets follow detectron2's layout under ``$DETECTRON2_DATASETS`` (``VOC2007``, ``VOC2012``,
``coco``). Run VOC five times (``SEED``) and report the mean, as the papers do. VOC is scored by
detectron2's ``PascalVOCDetectionEvaluator``, COCO by ``COCOEvaluator``.

This file registers the one piece those configs need beyond detectron2 itself:
``Res5ROIHeadsExtraNorm``, the C4 RoI head with an extra norm layer after res5 (MoCo's setting,
so the head sees normalised features whatever scale the self-supervised backbone produces).
"""

from __future__ import annotations

import os
import sys


def _detectron2():
    try:
        import detectron2  # noqa: F401
    except ImportError:
        print(
            "error: detectron2 is not installed (see https://detectron2.readthedocs.io/en/latest/tutorials/install.html); "
            "the built-in alternative is 'cssl-bench transfer detection'",
            file=sys.stderr,
        )
        sys.exit(2)


def register_extra_norm_head() -> None:
    """Register ``Res5ROIHeadsExtraNorm`` in detectron2's RoI-head registry (once)."""
    from detectron2.layers import get_norm
    from detectron2.modeling.roi_heads import ROI_HEADS_REGISTRY, Res5ROIHeads

    if "Res5ROIHeadsExtraNorm" in ROI_HEADS_REGISTRY:
        return

    class Res5ROIHeadsExtraNorm(Res5ROIHeads):
        """detectron2's Res5ROIHeads with ``cfg.MODEL.RESNETS.NORM`` appended to res5."""

        def __init__(self, cfg, input_shape):
            super().__init__(cfg, input_shape)
            self.res5.add_module("norm", get_norm(cfg.MODEL.RESNETS.NORM, self.res5[-1].out_channels))

    ROI_HEADS_REGISTRY.register(Res5ROIHeadsExtraNorm)


def _trainer_class():
    from detectron2.engine import DefaultTrainer
    from detectron2.evaluation import COCOEvaluator, PascalVOCDetectionEvaluator

    class Trainer(DefaultTrainer):
        @classmethod
        def build_evaluator(cls, cfg, dataset_name, output_folder=None):
            if "voc" in dataset_name:
                return PascalVOCDetectionEvaluator(dataset_name)
            return COCOEvaluator(dataset_name, output_dir=output_folder or os.path.join(cfg.OUTPUT_DIR, "inference"))

    return Trainer


def run(args):
    """One worker process (module level: detectron2's ``launch`` pickles it into spawned processes)."""
    from detectron2.checkpoint import DetectionCheckpointer
    from detectron2.config import get_cfg
    from detectron2.engine import default_setup

    register_extra_norm_head()
    trainer_cls = _trainer_class()
    cfg = get_cfg()
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.freeze()
    default_setup(cfg, args)
    if args.eval_only:
        model = trainer_cls.build_model(cfg)
        DetectionCheckpointer(model, save_dir=cfg.OUTPUT_DIR).resume_or_load(cfg.MODEL.WEIGHTS, resume=args.resume)
        return trainer_cls.test(cfg, model)
    trainer = trainer_cls(cfg)
    trainer.resume_or_load(resume=args.resume)
    return trainer.train()


def main(argv: list[str] | None = None):
    _detectron2()
    from detectron2.engine import default_argument_parser, launch

    args = default_argument_parser().parse_args(argv)
    launch(
        run,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )


if __name__ == "__main__":
    main()
