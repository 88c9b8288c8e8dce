"""Detection fine-tuning (SimSiam Table 5; docs/protocols.md, section 3) with torchvision's detectors, and its records.

``transfer_detection(run, dataset, protocol)`` fine-tunes Faster R-CNN (``task="box"``) or Mask R-CNN
(``"instance"``) on the run's backbone ``protocol.trials`` times (seeds ``seed, seed+1, ...``),
scores each (VOC protocols: detectron2's VOC2007 evaluator, ``evaluate.voc_evaluate``; COCO: pycocotools)
and returns one record per metric whose value is the mean over the
trials (``trial_values`` and ``std`` alongside): ``voc07/ap50``, ``voc07/ap``, ``voc07/ap75``,
``voc0712/...``, ``coco/ap50, ap, ap75, ap_mask50, ap_mask, ap_mask75`` (docs/records.md).

Named protocols (``PROTOCOLS``), after the MoCo detectron2 configs (``configs/*.yaml``):

- ``voc07``: train VOC2007 trainval, test VOC2007 test; R50-C4 Faster R-CNN, batch 16, lr 0.02,
  24k iterations, x0.1 at 18k/22k, 100 warm-up iterations, train short side 480..800 (step 32),
  test 800, long side <= 1333, 5 trials, scored as detectron2 scores VOC2007 test (11-point AP). [open] The papers do not state VOC07-only's schedule;
  it defaults to the 07+12 one.
- ``voc0712``: as ``voc07`` with VOC2007 + VOC2012 trainval for training.
- ``coco``: Mask R-CNN R50-C4 1x: 90k iterations, x0.1 at 60k/80k, batch 16, lr 0.02, 1000 warm-up
  iterations, train short side 640..800, test 800, 1 trial.

On ``embedded-det`` (the CPU stand-in) each protocol keeps its shape (which split trains, the
step positions as fractions of training, trials) with a CPU budget: 64-px scenes, short sides
40..64 (the paper's 0.6..1 range of the test size), batch 8, a few hundred iterations, 32 sampled RoIs
per image pooled to 8x8 (an object covers 4..8 res4 cells here: 14x14 would only oversample them),
fewer proposals. Everything is a field of ``DetectionProtocol`` and goes into each record.

The learning rate follows detectron2: ``lr * batch / 16``, linear warm-up from ``lr * 0.001``, no weight
decay on norm parameters (``WEIGHT_DECAY_NORM 0``), SGD momentum 0.9, weight decay 1e-4. With
``precise_bn`` > 0 the BN statistics are re-estimated on that many training batches before each
evaluation (detectron2's ``TEST.PRECISE_BN``, on in the MoCo configs).

A random-init baseline (the paper's ``scratch`` row): ``scratch=True`` re-initialises the run's
backbone architecture with the trial seed and records method ``scratch``, epochs 0; a run pretrained
with ``--epochs 0`` is also recorded as ``scratch``, since its backbone never trained.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from cssl_bench import UserError
from cssl_bench.eval.detection.datasets import DetectionSet, concat, read_coco, read_voc
from cssl_bench.eval.detection.evaluate import coco_evaluate, predict, to_coco_results, voc_evaluate
from cssl_bench.eval.detection.models import ARCHS, TASKS, build_detector, use_sync_bn

DATASETS = ("voc07", "voc0712", "coco", "embedded-det")
PROTOCOL_NAMES = ("voc07", "voc0712", "coco")
METRICS = ("voc07", "voc", "coco")  # DetectionProtocol.metric: how the test split is scored (evaluate.py)


@dataclass
class DetectionProtocol:
    name: str  # voc07 | voc0712 | coco: which paper column (and metric names) the numbers fill
    arch: str = "c4"
    task: str = "box"
    iterations: int = 24000
    steps: list[float] = field(default_factory=lambda: [0.75, 22 / 24])  # lr x0.1 at these fractions of training
    gamma: float = 0.1
    batch_size: int = 16  # images per step, all processes together
    lr: float = 0.02  # for batch 16; scaled linearly with batch_size
    momentum: float = 0.9
    weight_decay: float = 1e-4
    warmup_iters: int = 100
    warmup_factor: float = 0.001
    min_size: list[int] = field(default_factory=lambda: list(range(480, 801, 32)))  # training short sides
    max_size: int = 1333
    test_size: int = 800
    flip: bool = True
    extra_norm: bool = True
    bn: str = (
        "sync"  # sync (synchronised over all processes when several train, else BatchNorm) | bn (per-process BatchNorm)
    )
    precise_bn: int = 200
    roi_size: int = 14
    roi_batch: int = 512
    rpn_batch: int = 256
    rpn_pre_nms_train: int = 12000
    rpn_post_nms_train: int = 2000
    rpn_pre_nms_test: int = 6000
    rpn_post_nms_test: int = 1000
    anchors: list[int] = field(default_factory=list)  # empty: detectron2's 32..512 scaled to test_size / 800
    trials: int = 5
    seed: int = 0
    eval_batch: int = 8
    workers: int = 4
    # embedded-det only: scene size and counts (VOC2007 trainval, VOC2012 trainval, VOC2007 test), objects per scene
    scene_size: int = 64
    scenes_07: int = 200
    scenes_12: int = 200
    scenes_test: int = 100
    scene_objects: int = 3
    # scoring: voc07 (detectron2's VOC2007 evaluator: 11-point AP, difficult objects ignored), voc (VOC2010+ area AP)
    # or coco (pycocotools); records made before this field were scored with pycocotools (``results.tables.record_metric``)
    metric: str = "voc07"

    def with_overrides(self, **kw) -> DetectionProtocol:
        kw = {k: v for k, v in kw.items() if v is not None}
        valid = {f.name for f in dataclasses.fields(self)}
        for k in kw:
            if k not in valid:
                raise UserError(f"unknown detection option {k}; valid: {', '.join(sorted(valid))}", exit_code=2)
        for k, v in kw.items():
            _check_type(k, v, getattr(self, k))
        new = dataclasses.replace(self, **kw)
        new.min_size = sorted(
            int(s) for s in (new.min_size if isinstance(new.min_size, (list, tuple)) else [new.min_size])
        )
        if "min_size" in kw and "test_size" not in kw:
            new.test_size = new.min_size[-1]  # a single --min-size means "train and test at this size"
        if "iterations" in kw and "warmup_iters" not in kw:
            new.warmup_iters = round(
                self.warmup_iters * new.iterations / self.iterations
            )  # warm-up keeps its share of training
        if "test_size" in kw and "max_size" not in kw:
            new.max_size = round(self.max_size * new.test_size / self.test_size)
        new.validate()
        return new

    def validate(self) -> None:
        if self.name not in PROTOCOL_NAMES:
            raise UserError(
                f"unknown detection protocol {self.name!r}; choose from {', '.join(PROTOCOL_NAMES)}", exit_code=2
            )
        if self.arch not in ARCHS:
            raise UserError(f"unknown --arch {self.arch!r}; choose from {', '.join(ARCHS)}", exit_code=2)
        if self.task not in TASKS:
            raise UserError(f"unknown --task {self.task!r}; choose from {', '.join(TASKS)}", exit_code=2)
        if self.task == "instance" and self.name != "coco":
            raise UserError(
                "--task instance needs masks: use the coco protocol (--dataset coco, or embedded-det with --protocol coco)",
                exit_code=2,
            )
        for k in (
            "iterations",
            "batch_size",
            "trials",
            "test_size",
            "max_size",
            "eval_batch",
            "roi_size",
            "roi_batch",
            "rpn_batch",
            "rpn_pre_nms_train",
            "rpn_post_nms_train",
            "rpn_pre_nms_test",
            "rpn_post_nms_test",
            "scene_size",
            "scenes_07",
            "scenes_test",
            "scene_objects",
        ):
            if getattr(self, k) < 1:
                raise UserError(f"detection option {k} must be at least 1 (got {getattr(self, k)})", exit_code=2)
        if self.metric not in METRICS:
            raise UserError(f"unknown detection metric {self.metric!r}; choose from {', '.join(METRICS)}", exit_code=2)
        if self.task == "instance" and self.metric != "coco":
            raise UserError(
                "mask AP is scored with pycocotools only: use metric=coco with --task instance", exit_code=2
            )
        if self.bn not in ("sync", "bn"):
            raise UserError(f"unknown bn setting {self.bn!r}; choose from sync, bn", exit_code=2)
        for k in ("warmup_iters", "precise_bn", "workers", "scenes_12"):
            if getattr(self, k) < 0:
                raise UserError(f"detection option {k} must be at least 0 (got {getattr(self, k)})", exit_code=2)
        if not self.lr > 0:
            raise UserError(f"detection option lr must be positive (got {self.lr})", exit_code=2)
        if not all(0 < s <= 1 for s in self.steps):
            raise UserError(f"lr steps are fractions of training in (0, 1], got {self.steps}", exit_code=2)

    @property
    def scaled_lr(self) -> float:
        return self.lr * self.batch_size / 16

    def step_iterations(self) -> list[int]:
        return [int(round(s * self.iterations)) for s in self.steps]

    def lr_at(self, it: int) -> float:
        """detectron2's WarmupMultiStepLR: linear warm-up from ``warmup_factor``, then x``gamma`` at each step."""
        f = 1.0
        if it < self.warmup_iters:
            a = it / self.warmup_iters
            f = self.warmup_factor * (1 - a) + a
        return self.scaled_lr * f * self.gamma ** sum(it >= s for s in self.step_iterations())

    def record(self, dataset: str) -> dict:
        d = dataclasses.asdict(self)
        d.pop("workers")
        d.pop("eval_batch")
        if dataset != "embedded-det":
            for k in [k for k in d if k.startswith("scene")]:
                d.pop(k)
        return {**d, "detector": "mask-rcnn" if self.task == "instance" else "faster-rcnn", "framework": "torchvision"}


def _check_type(key: str, value, default) -> None:
    """An ``--opt key=value`` (or option) of the wrong type fails here, naming the option, not mid-trial."""

    def number(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool)

    if isinstance(default, bool):
        ok, what = isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)), "true or false"
    elif isinstance(default, int):
        ok, what = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(default, float):
        ok, what = number(value), "a number"
    elif isinstance(default, str):
        ok, what = isinstance(value, str), "a word"
    elif isinstance(default, list):
        ok = (isinstance(value, (list, tuple)) and all(number(v) for v in value)) or (
            key == "min_size" and number(value)
        )
        what = "a list of numbers, e.g. [1, 2]"
    else:
        ok, what = True, ""
    if not ok:
        raise UserError(f"detection option {key} must be {what}, got {value!r}", exit_code=2)


_VOC_SCHEDULE = dict(iterations=24000, steps=[18 / 24, 22 / 24], warmup_iters=100, trials=5)
PROTOCOLS: dict[str, DetectionProtocol] = {
    "voc07": DetectionProtocol("voc07", **_VOC_SCHEDULE),
    "voc0712": DetectionProtocol("voc0712", **_VOC_SCHEDULE),
    "coco": DetectionProtocol(
        "coco",
        task="instance",
        iterations=90000,
        steps=[60 / 90, 80 / 90],
        warmup_iters=1000,
        min_size=list(range(640, 801, 32)),
        trials=1,
        metric="coco",
    ),
}
# The CPU budget on embedded-det (see the module docstring); the schedule's shape stays the protocol's.
EMBEDDED_BUDGET = dict(
    iterations=300,
    batch_size=8,
    warmup_iters=20,
    min_size=[40, 48, 56, 64],
    max_size=107,
    test_size=64,
    precise_bn=0,
    roi_size=8,
    roi_batch=32,
    rpn_batch=64,
    rpn_pre_nms_train=600,
    rpn_post_nms_train=150,
    rpn_pre_nms_test=300,
    rpn_post_nms_test=50,
    eval_batch=25,
    workers=0,
)


def get_protocol(dataset: str, protocol: str | None = None, task: str | None = None) -> DetectionProtocol:
    """The named protocol for ``dataset``; on embedded-det ``protocol`` picks the paper column it stands in for
    (default: coco for ``task="instance"``, else voc07)."""
    if dataset not in DATASETS:
        raise UserError(f"unknown detection dataset {dataset!r}; choose from {', '.join(DATASETS)}", exit_code=2)
    if dataset == "embedded-det":
        name = protocol or ("coco" if task == "instance" else "voc07")
        if name not in PROTOCOLS:
            raise UserError(f"unknown --protocol {name!r}; choose from {', '.join(PROTOCOL_NAMES)}", exit_code=2)
        base = PROTOCOLS[name]
        trials = 1 if name != "coco" else base.trials  # CPU budget: one trial unless asked (--trials)
        p = dataclasses.replace(base, **EMBEDDED_BUDGET, trials=trials, task=task or base.task)
        p.validate()
        return p
    if protocol not in (None, dataset):
        raise UserError(
            f"--protocol {protocol} only applies to embedded-det; {dataset} is scored as {dataset}", exit_code=2
        )
    p = dataclasses.replace(PROTOCOLS[dataset], task=task or PROTOCOLS[dataset].task)
    p.validate()
    return p


def default_data_root() -> Path:
    """detectron2's convention: ``$DETECTRON2_DATASETS`` or ``./datasets`` (VOC2007/, VOC2012/, coco/ inside)."""
    return Path(os.environ.get("DETECTRON2_DATASETS", "datasets"))


def _coco_root(root: Path) -> Path:
    for cand in (root / "coco", root):
        if (cand / "annotations").is_dir():
            return cand
    raise UserError(
        f"no COCO found under {root} (expected coco/annotations/instances_train2017.json and coco/train2017/)"
    )


def load_data(dataset: str, p: DetectionProtocol, data_root: Path | None = None) -> tuple[DetectionSet, DetectionSet]:
    """(train, test) splits of ``dataset`` for protocol ``p``."""
    masks = p.task == "instance"
    if dataset == "embedded-det":
        from cssl_bench.data import embedded_det
        from cssl_bench.data.embedded import CLASSES

        root = embedded_det.ensure(
            embedded_det.EmbeddedDetSpec(p.scene_size, p.scenes_07, p.scenes_12, p.scenes_test, p.scene_objects)
        )
        if p.name == "coco":
            return (
                read_coco(root / "annotations" / "instances_train.json", root, "embedded-det/train", masks),
                read_coco(root / "annotations" / "instances_test.json", root, "embedded-det/test", masks),
            )
        parts = [read_voc(root, "2007", "trainval", CLASSES)] + (
            [read_voc(root, "2012", "trainval", CLASSES)] if p.name == "voc0712" else []
        )
        return concat("embedded-det/trainval", parts), read_voc(root, "2007", "test", CLASSES)
    root = Path(data_root) if data_root is not None else default_data_root()
    if dataset == "coco":
        c = _coco_root(root)
        return (
            read_coco(c / "annotations" / "instances_train2017.json", c / "train2017", "coco/train2017", masks),
            read_coco(c / "annotations" / "instances_val2017.json", c / "val2017", "coco/val2017", masks),
        )
    parts = [read_voc(root, "2007", "trainval")] + (
        [read_voc(root, "2012", "trainval")] if dataset == "voc0712" else []
    )
    return concat(f"{dataset}/trainval", parts), read_voc(root, "2007", "test")


# ---------------------------------------------------------------- training


class _Augmented(torch.utils.data.Dataset):
    """Training items keyed by ``(index, draw)``: the horizontal flip is drawn from ``(seed, draw, index)``,
    so a trial is reproducible whatever the number of loader workers."""

    def __init__(self, ds: DetectionSet, seed: int, flip: bool):
        self.ds, self.seed, self.flip = ds, seed, flip

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        i, draw = key
        img, t = self.ds[i]
        if self.flip and np.random.default_rng([self.seed, draw, i]).random() < 0.5:
            w = img.shape[-1]
            img = img.flip(-1)
            b = t["boxes"].clone()
            t["boxes"] = torch.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1)
            if "masks" in t:
                t["masks"] = t["masks"].flip(-1)
        return img, t


class _BatchStream(torch.utils.data.Sampler):
    """Batches of ``(index, draw)`` for iterations ``start..end``: epoch ``e`` is a permutation drawn from
    ``(seed, e)``; each rank takes its share of every global batch."""

    def __init__(self, n: int, batch: int, seed: int, start: int, end: int, rank: int = 0, world: int = 1):
        self.n, self.batch, self.seed, self.start, self.end, self.rank, self.world = (
            n,
            batch,
            seed,
            start,
            end,
            rank,
            world,
        )

    def __len__(self):
        return self.end - self.start

    def __iter__(self):
        per_rank = self.batch // self.world
        for it in range(self.start, self.end):
            first = it * self.batch
            out = []
            for pos in range(first + self.rank * per_rank, first + (self.rank + 1) * per_rank):
                epoch, k = divmod(pos, self.n)
                perm = _perm(self.n, self.seed, epoch)
                out.append((int(perm[k]), pos))
            yield out


_PERMS: dict[tuple[int, int, int], np.ndarray] = {}


def _perm(n: int, seed: int, epoch: int) -> np.ndarray:
    key = (n, seed, epoch)
    if key not in _PERMS:
        if len(_PERMS) > 8:
            _PERMS.clear()
        _PERMS[key] = np.random.default_rng([seed, epoch, 7]).permutation(n)
    return _PERMS[key]


def _as_list(batch):
    return batch


def _param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """No weight decay on norm parameters (detectron2's WEIGHT_DECAY_NORM = 0); the rest decays."""
    norm, rest, seen = [], [], set()
    for m in model.modules():
        for p in m.parameters(recurse=False):
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (norm if isinstance(m, (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm)) else rest).append(p)
    return [{"params": rest, "weight_decay": weight_decay}, {"params": norm, "weight_decay": 0.0}]


def _to_device(batch, device):
    images = [img.to(device, non_blocking=True).float().div_(255) for img, _ in batch]
    targets = [{k: (v.to(device) if torch.is_tensor(v) else v) for k, v in t.items()} for _, t in batch]
    return images, targets


@torch.no_grad()
def precise_bn(model: nn.Module, batches, n: int) -> None:
    """Re-estimate every BN's running mean/var as the plain average over ``n`` training batches
    (detectron2's PreciseBN): the running averages of a short fine-tune lag behind the weights.
    Each batch is a tuple of ``model``'s arguments (here ``(images, targets)``); the model is left in
    training mode and every BN keeps its momentum."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    if not bns or n <= 0:
        return
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average = plain mean over the batches seen
    model.train()
    for k, batch in enumerate(batches):
        if k >= n:
            break
        model(*batch)
    for m, mom in zip(bns, momenta):
        m.momentum = mom


@dataclass
class TrialResult:
    seed: int
    metrics: dict[str, float]
    history: list[tuple[int, dict[str, float]]]
    seconds: float
    losses: list[tuple[int, float]]
    norm: str  # the norm layers actually trained: BatchNorm2d, or SyncBatchNorm / GlobalBatchNorm (several processes)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def evaluate(
    model: nn.Module, test: DetectionSet, p: DetectionProtocol, device: torch.device, gt=None
) -> dict[str, float]:
    """AP50/AP/AP75 (+ mask APs for Mask R-CNN) of ``model`` on ``test`` at the protocol's test size."""
    from cssl_bench.nn.distributed import is_dist, rank, world_size

    inner = _unwrap(model)
    saved = inner.transform.min_size
    inner.transform.min_size = (p.test_size,)
    try:
        outputs, ids = predict(inner, test, device, p.eval_batch, rank(), world_size())
    finally:
        inner.transform.min_size = saved
    results = to_coco_results(outputs, ids, test.category_ids)
    if is_dist():
        import torch.distributed as dist

        gathered: list = [None] * world_size()
        dist.all_gather_object(gathered, results)
        results = [r for part in gathered for r in part]
    if p.metric != "coco":
        return voc_evaluate(test, results, use_07_metric=p.metric == "voc07")
    gt = gt or test.coco_gt()
    metrics = coco_evaluate(gt, results, "bbox")
    if p.task == "instance":
        metrics.update({f"ap_mask{k[2:]}": v for k, v in coco_evaluate(gt, results, "segm").items()})
    return metrics


def finetune(
    backbone: nn.Module,
    train: DetectionSet,
    test: DetectionSet,
    p: DetectionProtocol,
    seed: int,
    device: torch.device | None = None,
    evaluate_at: list[int] | None = None,
    log: Callable[[str], None] | None = None,
    log_every: int = 20,
) -> TrialResult:
    """One trial: fine-tune a detector on a *copy* of ``backbone`` for ``p.iterations`` steps and evaluate.

    ``evaluate_at``: extra iterations (0 = before any step) at which to evaluate; the final
    evaluation (after ``p.iterations``) is always made and gives ``metrics``."""
    from cssl_bench.nn.distributed import rank, world_size

    if device is None:
        device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    world, rk = world_size(), rank()
    if p.batch_size % world:
        raise UserError(f"detection batch size {p.batch_size} is not divisible by the {world} processes", exit_code=2)
    t0 = time.time()
    torch.manual_seed(seed)  # the detector's new layers are drawn from the trial seed
    model = build_detector(
        copy.deepcopy(backbone),
        len(train.classes),
        p.arch,
        p.task,
        min_size=p.min_size,
        max_size=p.max_size,
        anchors=tuple(p.anchors) or None,
        extra_norm=p.extra_norm,
        roi_size=p.roi_size,
        roi_batch=p.roi_batch,
        rpn_batch=p.rpn_batch,
        rpn_pre_nms_train=p.rpn_pre_nms_train,
        rpn_post_nms_train=p.rpn_post_nms_train,
        rpn_pre_nms_test=p.rpn_pre_nms_test,
        rpn_post_nms_test=p.rpn_post_nms_test,
    )
    if p.bn == "sync":
        model = use_sync_bn(model, device.type)
    model.to(device)
    train_set = train.trainable()
    if len(train_set) == 0:
        raise UserError(f"{train.name} has no image with a trainable object")
    params = _param_groups(model, p.weight_decay)
    opt = torch.optim.SGD(params, lr=p.lr_at(0), momentum=p.momentum)
    net = model
    if world > 1:
        # Mask R-CNN's mask branch sees no RoI in a batch without positives: let DDP skip its parameters then
        net = nn.parallel.DistributedDataParallel(
            model,
            device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=p.task == "instance",
        )
    data = _Augmented(train_set, seed, p.flip)

    def loader(start: int, end: int):
        return torch.utils.data.DataLoader(
            data,
            batch_sampler=_BatchStream(len(data), p.batch_size, seed, start, end, rk, world),
            num_workers=p.workers if device.type == "cuda" else min(p.workers, 2),
            collate_fn=_as_list,
            pin_memory=device.type == "cuda",
        )

    gt = test.coco_gt() if p.metric == "coco" else None
    checkpoints = sorted(set(evaluate_at or []) - {p.iterations})
    history: list[tuple[int, dict[str, float]]] = []
    losses: list[tuple[int, float]] = []

    def eval_now(it: int) -> dict[str, float]:
        if p.precise_bn and it > 0:
            precise_bn(model, (_to_device(b, device) for b in loader(it, it + p.precise_bn)), p.precise_bn)
        m = evaluate(net, test, p, device, gt)
        history.append((it, m))
        if log:
            log(f"  eval @ {it}: " + "  ".join(f"{k} {v:.1f}" for k, v in m.items()))
        return m

    it = 0
    bounds = [c for c in checkpoints if c < p.iterations] + [p.iterations]
    for stop in bounds:
        if stop > it:
            net.train()
            for batch in loader(it, stop):
                images, targets = _to_device(batch, device)
                for g in opt.param_groups:
                    g["lr"] = p.lr_at(it)
                loss_dict = net(images, targets)
                loss = sum(loss_dict.values())
                if not torch.isfinite(loss):
                    raise UserError(f"detection loss became {loss.item()} at iteration {it} (try a lower --lr)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                it += 1
                if it % log_every == 0 or it == 1:
                    losses.append((it, float(loss.detach())))
                    if log:
                        log(f"  it {it}/{p.iterations} loss {float(loss.detach()):.3f} lr {p.lr_at(it - 1):.4g}")
        if stop in checkpoints or stop == p.iterations:
            final = eval_now(stop)
    norm = next(type(m).__name__ for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm))
    return TrialResult(seed, final, history, time.time() - t0, losses, norm)


# ---------------------------------------------------------------- runs and records


def metric_name(protocol: str, key: str) -> str:
    return f"{protocol}/{key}"


def records_for_trials(run, dataset: str, p: DetectionProtocol, trials: list[TrialResult], scratch: bool) -> list[dict]:
    """One record per metric: value = mean over trials; ``trial_values``, ``std`` (n-1) and ``seconds`` alongside."""
    from cssl_bench.eval.probes import records_for

    keys = list(trials[0].metrics)
    means = {metric_name(p.name, k): float(np.mean([t.metrics[k] for t in trials])) for k in keys}
    protocol = {"name": "detection", **p.record(dataset), "norm_layer": trials[0].norm, "pretrained": not scratch}
    recs = records_for(run, dataset, "backbone", protocol, means, {"seconds": round(sum(t.seconds for t in trials), 1)})
    for r, k in zip(recs, keys):
        vals = [round(t.metrics[k], 4) for t in trials]
        r["trial_values"] = vals
        r["std"] = round(float(np.std(vals, ddof=1)), 4) if len(vals) > 1 else 0.0
        if scratch:
            r["method"], r["epochs"] = "scratch", 0
    return recs


def scratch_backbone(run, seed: int) -> nn.Module:
    """The run's backbone architecture, freshly initialised (the paper's random-init row)."""
    from cssl_bench.nn.backbones import build_backbone

    m = run.recipe.model
    torch.manual_seed(seed)
    return build_backbone(m.backbone, run.recipe.data.image_size, m.cifar_stem, False)


def transfer_detection(
    run,
    dataset: str,
    p: DetectionProtocol,
    scratch: bool = False,
    data_root: Path | None = None,
    device: torch.device | None = None,
    log: Callable[[str], None] | None = None,
    evaluate_at: list[int] | None = None,
) -> tuple[list[dict], list[TrialResult]]:
    """Fine-tune on ``dataset`` ``p.trials`` times from the run's backbone (or from scratch) and build the records."""
    scratch = scratch or run.epoch == 0
    train, test = load_data(dataset, p, data_root)
    if log:
        log(
            f"detection transfer: {dataset} as {p.name} ({p.task}, {p.arch}), {len(train)} train / {len(test)} test images, "
            f"{p.iterations} iterations x {p.trials} trial(s), {'scratch' if scratch else run.recipe.method} backbone"
        )
    trials = []
    for t in range(p.trials):
        seed = p.seed + t
        backbone = scratch_backbone(run, seed) if scratch else run.method.backbone
        if log:
            log(f" trial {t + 1}/{p.trials} (seed {seed})")
        trials.append(finetune(backbone, train, test, p, seed, device, evaluate_at, log))
    return records_for_trials(run, dataset, p, trials, scratch), trials
