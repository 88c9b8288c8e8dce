"""COCO-style evaluation with pycocotools: AP (mean over IoU 0.50:0.05:0.95), AP50 and AP75, for boxes
and, with instance masks, for masks. Values are percentages.

VOC is scored the same way (as the SimSiam/MoCo tables report VOC AP, AP50 and AP75); ``difficult``
objects become crowd regions, which COCOeval neither counts as misses nor lets produce false positives.
pycocotools interpolates precision at 101 recall points, where detectron2's VOC evaluator uses VOC's
own interpolation (11 points for VOC2007), so VOC numbers are close to, not identical with, detectron2's.
"""
from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

METRICS = ("ap50", "ap", "ap75")


def to_coco_results(outputs: list[dict], image_ids: list[int], category_ids: list[int], mask_threshold: float = 0.5) -> list[dict]:
    """torchvision detector outputs (boxes [N, 4] xyxy, labels [N] in 1..K, scores [N], masks [N, 1, H, W]
    probabilities) -> COCO result dicts (``bbox`` as x, y, w, h; ``segmentation`` as RLE with str counts)."""
    from pycocotools import mask as mask_utils

    results = []
    for out, img_id in zip(outputs, image_ids):
        boxes = out["boxes"].detach().cpu().numpy().astype(np.float64)
        labels = out["labels"].detach().cpu().numpy()
        scores = out["scores"].detach().cpu().numpy()
        masks = out.get("masks")
        if masks is not None:
            binary = (masks[:, 0] >= mask_threshold).cpu().numpy().astype(np.uint8)
        for k in range(len(scores)):
            x0, y0, x1, y1 = boxes[k]
            r = {"image_id": int(img_id), "category_id": int(category_ids[int(labels[k]) - 1]),
                 "bbox": [x0, y0, x1 - x0, y1 - y0], "score": float(scores[k])}
            if masks is not None:
                rle = mask_utils.encode(np.asfortranarray(binary[k]))
                r["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
            results.append(r)
    return results


def coco_evaluate(gt, results: list[dict], iou_type: str = "bbox", image_ids: list[int] | None = None) -> dict[str, float]:
    """``{"ap": .., "ap50": .., "ap75": ..}`` in percent for ``iou_type`` ``bbox`` or ``segm``.

    No detections at all scores 0 (pycocotools cannot load an empty result list)."""
    from pycocotools.cocoeval import COCOeval

    if not results:
        return {m: 0.0 for m in METRICS}
    with contextlib.redirect_stdout(io.StringIO()):
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        if image_ids is not None:
            ev.params.imgIds = sorted(image_ids)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    # stats: 0 = AP@[.5:.95], 1 = AP@.5, 2 = AP@.75 (all areas, 100 detections); -1 means "no ground truth"
    return {"ap": 100 * max(float(ev.stats[0]), 0.0), "ap50": 100 * max(float(ev.stats[1]), 0.0), "ap75": 100 * max(float(ev.stats[2]), 0.0)}


@torch.no_grad()
def predict(model, dataset, device: torch.device, batch_size: int = 8, rank: int = 0, world: int = 1) -> tuple[list[dict], list[int]]:
    """Run ``model`` (eval mode) over this rank's share of ``dataset`` (a ``DetectionSet``); outputs moved to the CPU."""
    model.eval()
    outputs, ids = [], []
    idx = list(range(rank, len(dataset), world))
    for s in range(0, len(idx), batch_size):
        chunk = idx[s:s + batch_size]
        images = [dataset.image(i).to(device, non_blocking=True).float().div_(255) for i in chunk]
        for out, i in zip(model(images), chunk):
            outputs.append({k: v.cpu() for k, v in out.items()})
            ids.append(dataset.records[i].image_id)
    return outputs, ids
