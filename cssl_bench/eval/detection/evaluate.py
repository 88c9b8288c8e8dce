"""Detection scoring: AP (mean over IoU 0.50:0.05:0.95), AP50 and AP75 in percent, two ways.

- ``voc_evaluate``: detectron2's ``PascalVOCDetectionEvaluator``, which scored the SimSiam/MoCo VOC columns:
  per class, detections of all test images ranked by score; each is compared with the ground-truth box of
  its image it overlaps most, and is a hit if that IoU is above the threshold (strictly) and the box was not
  found before (a second detection of it is a false positive); precision interpolated at 11 recall
  points (VOC2007's metric; ``use_07_metric=False``: the area under the precision envelope, VOC2010+);
  ``difficult`` objects count neither as hits nor as misses, and a detection whose best match is difficult
  is left out. AP at a threshold is the mean over classes; AP is the mean of the ten thresholds. As
  detectron2 writes its result files, scores are rounded to 3 decimals and coordinates to 0.1 px before
  matching. VOC's ``+1`` pixel convention (1-based inclusive boxes, widths ``x2 - x1 + 1``) applied to
  detectron2's shifted detections is exactly continuous IoU in our coordinates (``x0 = xmin - 1``).
  One difference: a class with no (non-difficult) ground truth in the test split is left out of the mean
  (detectron2 would count it as 0; every class of VOC2007 test has ground truth).
- ``coco_evaluate``: pycocotools' COCOeval (101 recall points, 100 detections per image, crowd regions
  ignored), for COCO boxes and masks.

I wrote the VOC scoring here (about 60 lines) because no maintained package installed here has it:
pycocotools and torchmetrics score COCO-style only, and detectron2 is not a dependency.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np
import torch

METRICS = ("ap50", "ap", "ap75")
IOU_THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)  # 0.50, 0.55, ..., 0.95


def to_coco_results(
    outputs: list[dict], image_ids: list[int], category_ids: list[int], mask_threshold: float = 0.5
) -> list[dict]:
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
            r = {
                "image_id": int(img_id),
                "category_id": int(category_ids[int(labels[k]) - 1]),
                "bbox": [x0, y0, x1 - x0, y1 - y0],
                "score": float(scores[k]),
            }
            if masks is not None:
                rle = mask_utils.encode(np.asfortranarray(binary[k]))
                r["segmentation"] = {"size": list(rle["size"]), "counts": rle["counts"].decode("ascii")}
            results.append(r)
    return results


def coco_evaluate(
    gt, results: list[dict], iou_type: str = "bbox", image_ids: list[int] | None = None
) -> dict[str, float]:
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
    return {
        "ap": 100 * max(float(ev.stats[0]), 0.0),
        "ap50": 100 * max(float(ev.stats[1]), 0.0),
        "ap75": 100 * max(float(ev.stats[2]), 0.0),
    }


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07_metric: bool = True) -> float:
    """Average precision of one ranked list (fractions, not percent). VOC2007: the mean over recall
    levels 0, 0.1, ..., 1 of the highest precision at a recall at least that level (0 where none is).
    Otherwise the area under the precision envelope (precision made non-increasing in recall)."""
    recall, precision = np.asarray(recall, float), np.asarray(precision, float)
    if use_07_metric:
        return float(
            np.mean([precision[recall >= t].max() if (recall >= t).any() else 0.0 for t in np.linspace(0, 1, 11)])
        )
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    i = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1]))


def _iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one x0, y0, x1, y1 box with each row of ``boxes`` [M, 4]."""
    iw = np.clip(np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0]), 0, None)
    ih = np.clip(np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1]), 0, None)
    inter = iw * ih
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def _class_aps(
    dets: list[tuple[float, int, np.ndarray]],
    gts: dict[int, tuple[np.ndarray, np.ndarray]],
    npos: int,
    use_07_metric: bool,
) -> np.ndarray:
    """VOC AP of one class at each of ``IOU_THRESHOLDS``: ``dets`` (score, image id, box), ``gts`` image id ->
    (boxes, difficult). Each detection's IoUs with its image's boxes are computed once for all thresholds."""
    order = sorted(range(len(dets)), key=lambda k: -dets[k][0])  # stable: equal scores keep their order
    best = []  # per ranked detection: (image, index of its best-overlapping box, that IoU), or None
    for k in order:
        _, img, box = dets[k]
        boxes = gts.get(img, (np.zeros((0, 4)), None))[0]
        if len(boxes):
            ious = _iou(box, boxes)
            j = int(ious.argmax())
            best.append((img, j, float(ious[j])))
        else:
            best.append(None)
    aps = np.zeros(len(IOU_THRESHOLDS))
    for t, threshold in enumerate(IOU_THRESHOLDS):
        taken = {img: np.zeros(len(b), bool) for img, (b, _) in gts.items()}
        tp = np.zeros(len(best))
        fp = np.zeros(len(best))
        for n, hit in enumerate(best):
            if hit is None or hit[2] <= threshold:
                fp[n] = 1
            elif gts[hit[0]][1][hit[1]]:
                continue  # its best match is a difficult object: neither a hit nor a false positive
            elif not taken[hit[0]][hit[1]]:
                tp[n], taken[hit[0]][hit[1]] = 1, True
            else:
                fp[n] = 1  # a second detection of an object already found
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        aps[t] = voc_ap(tp / npos, precision, use_07_metric)
    return aps


def voc_evaluate(
    test, results: list[dict], use_07_metric: bool = True, image_ids: list[int] | None = None
) -> dict[str, float]:
    """``{"ap": .., "ap50": .., "ap75": ..}`` in percent: detectron2's VOC scoring (module docstring) of the COCO-style
    ``results`` (``to_coco_results``) against ``test`` (a ``DetectionSet``; ``ignore`` marks the difficult objects)."""
    label_of = {cid: k + 1 for k, cid in enumerate(test.category_ids)}
    wanted = None if image_ids is None else set(image_ids)
    records = [r for r in test.records if wanted is None or r.image_id in wanted]
    aps = np.full((len(test.classes), len(IOU_THRESHOLDS)), np.nan)
    dets_by_class: dict[int, list] = {}
    for d in results:
        if wanted is not None and d["image_id"] not in wanted:
            continue
        x, y, w, h = d["bbox"]
        box = np.round(np.array([x, y, x + w, y + h], np.float64), 1)
        dets_by_class.setdefault(label_of[d["category_id"]], []).append(
            (round(float(d["score"]), 3), d["image_id"], box)
        )
    for c in range(1, len(test.classes) + 1):
        gts = {}
        npos = 0
        for r in records:
            sel = r.labels == c
            gts[r.image_id] = (r.boxes[sel].astype(np.float64), r.ignore[sel])
            npos += int((~r.ignore[sel]).sum())
        if npos == 0:
            continue  # no ground truth to find: left out of the mean (module docstring)
        aps[c - 1] = _class_aps(dets_by_class.get(c, []), gts, npos, use_07_metric)
    scored = aps[~np.isnan(aps).all(axis=1)]
    if not len(scored):
        return {m: 0.0 for m in METRICS}
    per_threshold = 100 * scored.mean(axis=0)
    t50, t75 = int(np.argmin(abs(IOU_THRESHOLDS - 0.5))), int(np.argmin(abs(IOU_THRESHOLDS - 0.75)))
    return {"ap": float(per_threshold.mean()), "ap50": float(per_threshold[t50]), "ap75": float(per_threshold[t75])}


@torch.no_grad()
def predict(
    model, dataset, device: torch.device, batch_size: int = 8, rank: int = 0, world: int = 1
) -> tuple[list[dict], list[int]]:
    """Run ``model`` (eval mode) over this rank's share of ``dataset`` (a ``DetectionSet``); outputs moved to the CPU."""
    model.eval()
    outputs, ids = [], []
    idx = list(range(rank, len(dataset), world))
    for s in range(0, len(idx), batch_size):
        chunk = idx[s : s + batch_size]
        images = [dataset.image(i).to(device, non_blocking=True).float().div_(255) for i in chunk]
        for out, i in zip(model(images), chunk):
            outputs.append({k: v.cpu() for k, v in out.items()})
            ids.append(dataset.records[i].image_id)
    return outputs, ids
