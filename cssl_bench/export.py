"""Export a run's backbone for other frameworks: torchvision, timm and detectron2.

``cssl-bench export RUN_DIR --to FORMAT OUT`` writes:

- ``torchvision``: a state dict with torchvision's ResNet key names (``conv1``, ``bn1``,
  ``layer1..4``, ``fc``) that ``torchvision.models.resnet50()`` / ``resnet18()`` load with
  ``strict=True``. The pretraining replaced ``fc`` by an identity, so a *fresh* ``fc`` of
  torchvision's shape ([1000, D] and [1000]; PyTorch's default ``nn.Linear`` initialisation, seeded)
  is added: the classifier carries no pretrained information, only the key set is complete.
- ``timm``: the backbone keys only (timm's ResNets use the same names); they load with
  ``strict=True`` into ``timm.create_model("resnet50", num_classes=0)`` (no classifier), or into a
  timm model of a ``timm:NAME`` run.
- ``detectron2``: a pickle ``{"model": {name: numpy array}, "__author__": "cssl-bench",
  "matching_heuristics": True}`` following the MoCo conversion (docs/protocols.md, section 3): backbone keys only;
  stem keys get ``stem.``; ``layerN`` -> ``res{N+1}``; ``bnK`` -> ``convK.norm``;
  ``downsample.0`` / ``downsample.1`` -> ``shortcut`` / ``shortcut.norm``. BN's
  ``num_batches_tracked`` counters are dropped: detectron2's norm layers (FrozenBN, naiveSyncBN)
  have no use for them. A detectron2 user then runs (configs in ``cssl_bench/eval/detection/configs``)::

      cssl-bench export RUN_DIR --to detectron2 r50.pkl
      python -m cssl_bench.eval.detection.detectron2_train --num-gpus 8 \\
          --config-file $(cssl-bench transfer configs)/voc0712_R_50_C4_24k.yaml MODEL.WEIGHTS r50.pkl

Runs on small images use the CIFAR stem (3x3 ``conv1``, no max-pool): their ``conv1.weight`` is
[C, 3, 3, 3] and torchvision's 7x7 ``conv1`` (or detectron2's stem) cannot take it; ``export`` says so.
Width-scaled ResNets (``resnet18-w0.25``) keep torchvision's key names but have no torchvision
constructor: rebuild them with ``cssl_bench.nn.backbones.build_backbone``.
"""

from __future__ import annotations

import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from cssl_bench import UserError
from cssl_bench.nn.backbones import is_resnet, uses_cifar_stem

FORMATS = ("torchvision", "timm", "detectron2")
_LAYER = re.compile(r"^layer(\d)$")
_BN = re.compile(r"^bn(\d)$")


@dataclass
class Exported:
    """What ``export`` wrote: the format, the file, how many tensors, and notes for the user."""

    fmt: str
    path: Path
    n_tensors: int
    notes: list[str] = field(default_factory=list)


def backbone_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """The backbone's state dict on the CPU (detached copies), with the identity ``fc`` contributing nothing."""
    return {k: v.detach().cpu().clone() for k, v in backbone.state_dict().items()}


def torchvision_state_dict(backbone: nn.Module, num_classes: int = 1000, seed: int = 0) -> dict[str, torch.Tensor]:
    """Backbone keys plus a fresh ``fc`` ([num_classes, D] weight, [num_classes] bias) so that
    ``torchvision.models.resnetXX().load_state_dict(sd, strict=True)`` succeeds."""
    if not is_resnet(backbone):
        raise UserError(
            "--to torchvision needs a ResNet backbone (resnet18, resnet50, resnet18-w0.25, ...); use --to timm for timm models",
            exit_code=2,
        )
    sd = backbone_state_dict(backbone)
    g = torch.get_rng_state()
    torch.manual_seed(seed)  # the fresh classifier is reproducible
    fc = nn.Linear(backbone.out_dim, num_classes)
    torch.set_rng_state(g)
    sd["fc.weight"], sd["fc.bias"] = fc.weight.detach().clone(), fc.bias.detach().clone()
    return sd


def timm_state_dict(backbone: nn.Module) -> dict[str, torch.Tensor]:
    """timm's ResNets share torchvision's key names; without ``fc`` the dict matches ``num_classes=0``."""
    return backbone_state_dict(backbone)


def detectron2_key(key: str) -> str:
    """One torchvision ResNet key in detectron2's naming (docs/protocols.md, section 3), e.g.
    ``layer1.0.downsample.1.weight`` -> ``res2.0.shortcut.norm.weight``, ``bn1.bias`` -> ``stem.conv1.norm.bias``."""
    parts = key.split(".")
    if not _LAYER.match(parts[0]):
        parts = ["stem"] + parts
    out: list[str] = []
    i = 0
    while i < len(parts):
        p = parts[i]
        if (m := _LAYER.match(p)) is not None:
            out.append(f"res{int(m.group(1)) + 1}")
        elif (m := _BN.match(p)) is not None:
            out += [f"conv{m.group(1)}", "norm"]
        elif p == "downsample" and i + 1 < len(parts) and parts[i + 1] in ("0", "1"):
            out += ["shortcut"] if parts[i + 1] == "0" else ["shortcut", "norm"]
            i += 1
        else:
            out.append(p)
        i += 1
    return ".".join(out)


def detectron2_checkpoint(backbone: nn.Module) -> dict:
    """The pickle payload detectron2's ``DetectionCheckpointer`` reads (numpy arrays, matching heuristics on)."""
    if not is_resnet(backbone):
        raise UserError("--to detectron2 needs a ResNet backbone (detectron2's R50-C4 is a ResNet)", exit_code=2)
    model = {
        detectron2_key(k): v.numpy()
        for k, v in backbone_state_dict(backbone).items()
        if not k.endswith("num_batches_tracked")
    }
    return {"model": model, "__author__": "cssl-bench", "matching_heuristics": True}


def check_export_target(out: Path) -> None:
    """The export's folder must be a folder that can be written (it is created if missing): one line, before any work."""
    from cssl_bench.train.checkpoint import check_writable_dir

    folder = Path(out).parent
    if folder.exists() and not folder.is_dir():
        raise UserError(f"cannot write the export to {folder}: it is a file, not a folder; nothing was exported")
    try:
        check_writable_dir(folder)
    except PermissionError:
        raise UserError(f"cannot write the export to {folder} (permission denied); nothing was exported") from None
    except OSError as x:
        raise UserError(f"cannot write the export to {folder} ({x.strerror or x}); nothing was exported") from None


def export_backbone(backbone: nn.Module, fmt: str, out: Path, seed: int = 0) -> Exported:
    """Write ``backbone`` to ``out`` in format ``fmt`` (atomically); returns what was written and notes. A failed
    write says so as the export's (no file is left half-written; an existing one is unchanged)."""
    from cssl_bench.train.checkpoint import CheckpointWriteError

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}", exit_code=2)
    out = Path(out)
    if out.exists() and out.is_dir():
        raise UserError(f"{out} is a folder; give a file name for the export")
    arch = getattr(backbone, "arch", type(backbone).__name__)
    notes: list[str] = []
    if uses_cifar_stem(backbone):
        c = backbone.conv1.out_channels
        notes.append(
            f"{arch} uses the CIFAR stem (3x3 conv1, no max-pool): before loading, set model.conv1 = "
            f"nn.Conv2d(3, {c}, 3, 1, 1, bias=False) and model.maxpool = nn.Identity()"
            + (" (detectron2 cannot take a 3x3 stem and will skip conv1)" if fmt == "detectron2" else "")
        )
    if is_resnet(backbone) and "-w" in arch and fmt != "detectron2":
        notes.append(
            f"{arch} is width-scaled: no {fmt} constructor builds it; use cssl_bench.nn.backbones.build_backbone('{arch}')"
        )
    existed = out.is_file()
    try:
        n = _write_export(backbone, fmt, out, seed, arch, notes)
    except (CheckpointWriteError, OSError) as x:
        reason = x.reason if isinstance(x, CheckpointWriteError) else (x.strerror or str(x))
        raise UserError(
            f"could not write the export {out} ({reason}); nothing was exported"
            + (" and the existing file is unchanged" if existed else "")
        ) from None
    return Exported(fmt, out, n, notes)


def _write_export(backbone: nn.Module, fmt: str, out: Path, seed: int, arch: str, notes: list[str]) -> int:
    """Write the export file; returns the number of tensors written (appends format notes)."""
    from cssl_bench.train.checkpoint import atomic_write_bytes, save_checkpoint

    if fmt == "torchvision":
        sd = torchvision_state_dict(backbone, seed=seed)
        notes.append("fc is freshly initialised (the pretraining had no classifier); it loads with strict=True")
        save_checkpoint(sd, out, keep_previous=False)
        n = len(sd)
    elif fmt == "timm":
        sd = timm_state_dict(backbone)
        if is_resnet(backbone) and "-w" not in arch:
            notes.append(f"load with timm.create_model('{arch}', num_classes=0).load_state_dict(sd, strict=True)")
        save_checkpoint(sd, out, keep_previous=False)
        n = len(sd)
    else:
        payload = detectron2_checkpoint(backbone)
        atomic_write_bytes(out, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
        n = len(payload["model"])
    return n


def export_run(run_dir: Path, fmt: str, out: Path, epoch: int | None = None, seed: int = 0) -> Exported:
    """Load a run (``RUN/checkpoints/last.pt`` or ``epoch_N.pt``) and export its backbone."""
    from cssl_bench.eval.features import load_run

    if fmt not in FORMATS:
        raise UserError(f"unknown export format {fmt!r}; choose from {', '.join(FORMATS)}", exit_code=2)
    check_export_target(Path(out))  # before the run is loaded
    run = load_run(run_dir, epoch)
    return export_backbone(run.method.backbone, fmt, out, seed)
