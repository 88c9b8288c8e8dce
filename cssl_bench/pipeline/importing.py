"""Import a backbone trained elsewhere as a cssl-bench run directory (``cssl-bench import``; docs/importing.md).

``import_checkpoint(path, fmt, arch, ...)`` reads a checkpoint with ``torch.load(weights_only=True)`` (or a
``.safetensors`` file), finds its state dict (unwrapping containers such as ``state_dict``, ``model``,
``teacher``), recognises the layout of the keys, maps the backbone's tensors onto the backbone cssl-bench
builds for ``arch`` (``nn.backbones.build_backbone``), and writes a run directory that every probe,
``evaluate``, ``transfer`` and ``export`` loads like a finished pretraining:

- ``config.yaml``: the recipe of ``scale`` (dataset stand-ins, image size, ...) with method ``imported:FORMAT``,
  ``model.backbone = arch`` and ``model.cifar_stem`` read from the weights (a 3x3 ``conv1`` is the CIFAR stem:
  stride 1, no max-pool; a 7x7 one the ImageNet stem);
- ``checkpoints/last.pt``: a cssl-bench checkpoint whose model is the backbone only (``backbone.*``), epoch
  ``--epochs`` (None when unknown; the records then say ``epochs: null``), step 0;
- ``run.json``: ``status: complete`` for the recipe's hash, ``source: {file, sha256, format}`` (copied into every
  record a probe writes on the run) and ``import`` (what was mapped, which known parts were left out).

Every key of the source state dict is accounted for: it is mapped onto a backbone tensor, or it belongs to a
known non-backbone part of its layout (projector, predictor, prototypes, momentum encoder, queue, classifier
``fc``/``head``), or it is an *extra* key, which is an error unless ``allow_extra`` (then run.json lists them).
Backbone tensors missing from the file are an error, except BatchNorm's ``num_batches_tracked`` counters
(absent from some older checkpoints; unused by evaluation), which are filled with 0 and listed.
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from cssl_bench import UserError, __version__
from cssl_bench.config import SCALES, Recipe, _load_yaml, _merge_layer, parse_override, validate
from cssl_bench.data.datasets import check_dataset_name
from cssl_bench.nn.backbones import _DEPTHS, build_backbone
from cssl_bench.train.checkpoint import (
    FORMAT,
    atomic_write_text,
    check_writable_dir,
    save_checkpoint,
    write_run_json,
)

FORMATS = ("auto", "moco", "simsiam", "swav", "byol", "dino", "torchvision", "timm", "lightly", "solo-learn")

# Entries that hold a state dict, in the order they are tried when a checkpoint is a container (DINO: the teacher,
# the network its evaluations use, before the student).
CONTAINERS = (
    "state_dict",
    "model",
    "teacher",
    "online_network_state_dict",
    "model_state_dict",
    "model_state",
    "network",
    "module",
    "net",
    "student",
)


@dataclass(frozen=True)
class Layout:
    """Where a format keeps the backbone: keys under ``prefix`` (after a DDP ``module.`` is stripped) are the
    backbone's, in torchvision's names or as ``nn.Sequential(*resnet.children()[:-1])`` (``0`` conv1, ``1`` bn1,
    ``4``-``7`` layer1-4; found from the keys); keys under ``parts`` are the known non-backbone parts; keys under
    ``duplicates`` are a second copy of the backbone (byol-pytorch registers the network twice), checked equal."""

    fmt: str
    prefix: str
    parts: tuple[str, ...] = ()
    duplicates: tuple[str, ...] = ()
    describe: str = ""


_SOLO_PARTS = (
    "classifier",
    "projector",
    "predictor",
    "momentum_backbone",
    "momentum_encoder",
    "momentum_projector",
    "momentum_predictor",
    "momentum_classifier",
    "momentum_head",
    "head",
    "prototypes",
    "queue",
    "queue_ptr",
    "dino_loss_func",
)
_LIGHTLY_PARTS = (
    "projection_head",
    "prediction_head",
    "prototypes",
    "backbone_momentum",
    "projection_head_momentum",
    "prediction_head_momentum",
    "online_classifier",
    "classifier",
    "criterion",
    "memory_bank",
    "queue",
    "student_backbone",
    "student_head",
    "student_projection_head",
    "teacher_head",
    "teacher_projection_head",
)

LAYOUTS: dict[str, tuple[Layout, ...]] = {
    "moco": (
        Layout("moco", "encoder_q.", ("encoder_k", "queue", "queue_ptr"), describe="MoCo v1/v2 (encoder_q)"),
        Layout("moco", "base_encoder.", ("momentum_encoder", "predictor"), describe="MoCo v3 (base_encoder)"),
    ),
    "simsiam": (Layout("simsiam", "encoder.", ("predictor",), describe="SimSiam (encoder; encoder.fc: projector)"),),
    "swav": (Layout("swav", "", ("projection_head", "prototypes"), describe="SwAV (ResNet with projection_head)"),),
    "byol": (
        Layout(
            "byol",
            "online_encoder.net.",
            ("online_encoder.projector", "online_predictor", "target_encoder"),
            ("net",),
            "byol-pytorch (online_encoder.net)",
        ),
        Layout("byol", "net.", ("online_encoder", "online_predictor", "target_encoder"), describe="byol-pytorch (net)"),
        Layout(
            "byol",
            "online_network.encoder.",
            ("online_network.projetion", "online_network.projection", "target_network", "predictor"),
            describe="PyTorch-BYOL (online_network.encoder)",
        ),
        Layout("byol", "encoder.", ("projetion", "projection"), describe="PyTorch-BYOL online_network_state_dict"),
    ),
    "dino": (Layout("dino", "backbone.", ("head",), describe="DINO (backbone of a MultiCropWrapper)"),),
    "torchvision": (Layout("torchvision", "", describe="torchvision state dict"),),
    "timm": (Layout("timm", "", describe="timm state dict"),),
    "lightly": (
        Layout("lightly", "backbone.", _LIGHTLY_PARTS, describe="lightly (backbone)"),
        Layout("lightly", "teacher_backbone.", _LIGHTLY_PARTS, describe="lightly DINO (teacher_backbone)"),
    ),
    "solo-learn": (
        Layout("solo-learn", "backbone.", _SOLO_PARTS, describe="solo-learn (backbone)"),
        Layout("solo-learn", "encoder.", _SOLO_PARTS, describe="solo-learn before 1.0 (encoder)"),
    ),
}

# nn.Sequential(*resnet.children()[:-1]) index -> torchvision name (2 relu, 3 max-pool, 8 avg-pool hold no tensors;
# 9 is fc when the whole children list was kept)
_SEQUENTIAL = {"0": "conv1", "1": "bn1", "4": "layer1", "5": "layer2", "6": "layer3", "7": "layer4", "9": "fc"}
_LIGHTLY_MARKERS = ("projection_head", "prediction_head", "backbone_momentum", "online_classifier")
_SOLO_MARKERS = ("projector", "momentum_backbone", "momentum_encoder", "classifier")
_LIGHTNING_KEYS = ("pytorch-lightning_version", "global_step", "hyper_parameters", "callbacks")


@dataclass
class Mapping:
    """The result of matching a state dict to a backbone: ``tensors`` (backbone key -> tensor, complete),
    ``known`` (known non-backbone part -> number of keys), ``extra`` (source keys of no known part),
    ``filled`` (backbone keys absent from the file, set to 0: ``num_batches_tracked`` only)."""

    layout: Layout
    tensors: dict[str, torch.Tensor]
    mapped: int
    known: dict[str, int] = field(default_factory=dict)
    extra: list[str] = field(default_factory=list)
    filled: list[str] = field(default_factory=list)
    sequential: bool = False
    cast: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------------------------
# reading


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _is_safetensors(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(9)
    return len(head) == 9 and int.from_bytes(head[:8], "little") < (1 << 30) and head[8:9] == b"{"


def read_checkpoint(path: Path):
    """The object stored in ``path``: ``torch.load(weights_only=True)`` (argparse.Namespace, which DINO and other
    training scripts store as ``args``, is allowed: it is plain data), or a safetensors file. A missing, empty,
    truncated or foreign file, and a pickle that would run code to load, give a one-line ``UserError``."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist", exit_code=2)
    if path.is_dir():
        raise UserError(f"{path} is a folder; give a checkpoint file", exit_code=2)
    if path.stat().st_size == 0:
        raise UserError(f"checkpoint {path} is empty", exit_code=2)
    if _is_safetensors(path):
        try:
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        except Exception as e:  # noqa: BLE001  (safetensors raises its own error types)
            raise UserError(
                f"checkpoint {path} is corrupted or truncated (safetensors: {type(e).__name__})", 2
            ) from None
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        m = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
        if m or "Weights only load failed" in text:
            what = f"it holds a {m.group(1)} object" if m else "it holds more than tensors and plain data"
            raise UserError(
                f"checkpoint {path} was refused: loading it would run code ({what}); if you trust the file, "
                f"re-save only its state dict (torch.save(sd, 'weights.pt')) and import that",
                exit_code=2,
            ) from None
        raise UserError(f"checkpoint {path} is corrupted or truncated (UnpicklingError)", exit_code=2) from None
    except Exception as e:  # noqa: BLE001  (torch reports damage as RuntimeError, OSError, EOFError, KeyError, ...)
        raise UserError(
            f"checkpoint {path} is corrupted, truncated or not a torch checkpoint ({type(e).__name__})", exit_code=2
        ) from None


def _is_state_dict(obj) -> bool:
    """A flat mapping of names to tensors (no nested mappings; a few non-tensor entries are caught as extra keys)."""
    return (
        isinstance(obj, dict)
        and any(isinstance(v, torch.Tensor) for v in obj.values())
        and not any(isinstance(v, dict) for v in obj.values())
        and all(isinstance(k, str) for k in obj)
    )


def _entries(obj: dict) -> str:
    names = [str(k) for k in obj][:8]
    return ", ".join(names) + (", ..." if len(obj) > 8 else "")


def unwrap(obj, key: str | None = None, fmt: str = "auto") -> tuple[dict, str]:
    """(state dict, container path) of a loaded checkpoint: ``key`` ('/'-separated, e.g. ``teacher`` or
    ``state_dict``) names the entry; else the first of ``CONTAINERS`` present is entered until a flat state dict
    is reached (``teacher`` first for DINO)."""
    path: list[str] = []
    if key:
        for part in key.split("/"):
            if not isinstance(obj, dict) or part not in obj:
                have = _entries(obj) if isinstance(obj, dict) else type(obj).__name__
                raise UserError(f"--key {key}: the checkpoint has no entry {'/'.join(path + [part])} ({have})", 2)
            obj = obj[part]
            path.append(part)
    order = ("teacher",) + tuple(c for c in CONTAINERS if c != "teacher") if fmt == "dino" else CONTAINERS
    while not _is_state_dict(obj):
        if not isinstance(obj, dict):
            where = f" at {'/'.join(path)}" if path else ""
            raise UserError(f"the checkpoint holds a {type(obj).__name__}{where}, not a state dict", exit_code=2)
        nxt = next((c for c in order if isinstance(obj.get(c), dict)), None)
        if nxt is None:
            raise UserError(
                f"found no state dict in the checkpoint{' at ' + '/'.join(path) if path else ''} "
                f"(entries: {_entries(obj) or 'none'}); name the entry with --key",
                exit_code=2,
            )
        obj = obj[nxt]
        path.append(nxt)
    return obj, "/".join(path)


def strip_ddp(sd: dict) -> tuple[dict, str]:
    """Remove ``module.`` (DistributedDataParallel / DataParallel) when every key has it; returns what was removed."""
    removed = ""
    while sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module.") :]: v for k, v in sd.items()}
        removed += "module."
    return sd, removed


# ----------------------------------------------------------------------------------------------------------------
# layouts


def _under(key: str, prefix: str) -> bool:
    """``key`` is ``prefix`` or inside it (whole dotted components: ``queue`` does not cover ``queue_ptr``)."""
    return key == prefix or key.startswith(prefix + ".")


def _has(keys, prefix: str) -> bool:
    return any(_under(k, prefix) for k in keys)


def detect_format(keys: list[str], container: str, top_keys: list[str], resnet: bool) -> str:
    """The layout of a state dict's keys (after ``module.`` is stripped); see docs/importing.md for the rules."""
    if _has(keys, "encoder_q") or _has(keys, "base_encoder"):
        return "moco"
    if _has(keys, "online_encoder") or _has(keys, "online_network") or container == "online_network_state_dict":
        return "byol"
    if container.split("/")[-1] in ("teacher", "student") and _has(keys, "backbone"):
        return "dino"
    if _has(keys, "backbone") or _has(keys, "teacher_backbone"):
        if (
            any(_has(keys, m) for m in _LIGHTLY_MARKERS)
            or "backbone.0.weight" in keys
            or _has(keys, "teacher_backbone")
        ):
            return "lightly"
        if any(_has(keys, m) for m in _SOLO_MARKERS) or any(k in top_keys for k in _LIGHTNING_KEYS):
            return "solo-learn"
        if _has(keys, "head"):
            return "dino"
        return "lightly"
    if _has(keys, "encoder"):
        if any(_has(keys, m) for m in ("projector", "momentum_encoder", "classifier")):
            return "solo-learn"
        return "simsiam"
    if _has(keys, "projection_head") or _has(keys, "prototypes"):
        return "swav"
    if _has(keys, "net") and _has(keys, "online_predictor"):
        return "byol"
    return "torchvision" if resnet else "timm"


def pick_layout(fmt: str, keys: list[str]) -> Layout:
    """The first layout of ``fmt`` whose backbone prefix has keys (a plain state dict's prefix is empty)."""
    for lay in LAYOUTS[fmt]:
        if not lay.prefix or any(k.startswith(lay.prefix) for k in keys):
            return lay
    want = " or ".join(f"'{lay.prefix}*'" for lay in LAYOUTS[fmt])
    firsts = sorted({k.split(".")[0] for k in keys})[:6]
    raise UserError(
        f"no {fmt} backbone keys in the checkpoint (expected {want}; its keys start with {', '.join(firsts)}); "
        f"try --format auto",
        exit_code=2,
    )


def _sequential_to_torchvision(key: str) -> str | None:
    head, _, rest = key.partition(".")
    name = _SEQUENTIAL.get(head)
    return f"{name}.{rest}" if name and rest else None


def _is_lightly_generator(ns: dict) -> bool:
    """lightly's own ResNetGenerator wrapped as nn.Sequential (``2.0.shortcut``): a layout without the stem ReLU."""
    return (
        any(re.match(r"^[2-5]\.\d+\.(shortcut|conv1)\.", k) for k in ns)
        and "4.0.conv1.weight" in ns
        and not any(k.startswith("7.") for k in ns)
    )


def _classifier_names(backbone: torch.nn.Module) -> tuple[str, ...]:
    """Names of a backbone's classifier in source checkpoints: ``fc`` (torchvision ResNets), ``head``, and the
    classifier a timm model declares (``pretrained_cfg['classifier']``, e.g. ``head.fc``)."""
    names = {"fc", "head"}
    cfg = getattr(backbone, "pretrained_cfg", None) or getattr(backbone, "default_cfg", None) or {}
    cls = cfg.get("classifier") if isinstance(cfg, dict) else None
    for c in [cls] if isinstance(cls, str) else list(cls or []):
        names.add(c)
    return tuple(sorted(names))


def _short(keys: list[str], n: int = 4) -> str:
    return ", ".join(keys[:n]) + (f", ... ({len(keys)} in all)" if len(keys) > n else "")


def map_state_dict(sd: dict, layout: Layout, target: dict[str, torch.Tensor], classifier: tuple[str, ...]) -> Mapping:
    """Match the (``module.``-stripped) source ``sd`` to the backbone's state dict ``target`` through ``layout``.

    Raises a one-line ``UserError`` naming what is wrong: backbone tensors missing (first few and a count),
    tensors of other shapes (first few and a count), non-finite values, or a byol-pytorch duplicate that differs."""
    ns = (
        {k[len(layout.prefix) :]: k for k in sd if k.startswith(layout.prefix)} if layout.prefix else {k: k for k in sd}
    )
    sequential = "0.weight" in ns and "conv1.weight" in target
    if sequential:
        if _is_lightly_generator(ns):
            raise UserError(
                "the backbone is lightly's ResNetGenerator as nn.Sequential (layers 2-5, 'shortcut'), whose forward "
                "has no stem ReLU: a torchvision ResNet would compute other features; it cannot be imported",
                exit_code=2,
            )
        ns = {(_sequential_to_torchvision(k) or f"?{k}"): src for k, src in ns.items()}
    tensors: dict[str, torch.Tensor] = {}
    known: dict[str, int] = {}
    extra: list[str] = []
    bad_shape: list[str] = []
    cast: set[str] = set()
    for k, src in ns.items():
        v = sd[src]
        if k in target:
            if not isinstance(v, torch.Tensor):
                extra.append(src)
            elif tuple(v.shape) != tuple(target[k].shape):
                bad_shape.append(f"{k}: file {list(v.shape)}, backbone {list(target[k].shape)}")
            else:
                if v.dtype != target[k].dtype:
                    cast.add(f"{str(v.dtype).replace('torch.', '')}->{str(target[k].dtype).replace('torch.', '')}")
                tensors[k] = v.detach().to(target[k].dtype).clone()
            continue
        part = next((c for c in classifier if _under(k, c)), None)
        if part is None and not layout.prefix:
            part = next((p for p in layout.parts if _under(k, p)), None)
        if part is not None:
            name = layout.prefix + (
                {v: n for n, v in _SEQUENTIAL.items()}[part] if sequential and part == "fc" else part
            )
            known[name] = known.get(name, 0) + 1
        else:
            extra.append(src)
    if layout.prefix:
        for src in sd:
            if src.startswith(layout.prefix):
                continue
            dup = next((d for d in layout.duplicates if _under(src, d)), None)
            if dup is not None:
                twin = layout.prefix + src[len(dup) + 1 :]
                if twin in sd and not (isinstance(sd[src], torch.Tensor) and torch.equal(sd[src], sd[twin])):
                    raise UserError(f"{src} differs from {twin}: the file holds two different backbones", exit_code=2)
                known[dup] = known.get(dup, 0) + 1
                continue
            part = next((p for p in layout.parts if _under(src, p)), None)
            if part is not None:
                known[part] = known.get(part, 0) + 1
            else:
                extra.append(src)
    missing = [k for k in target if k not in tensors and not any(b.startswith(k + ":") for b in bad_shape)]
    filled = [k for k in missing if k.endswith("num_batches_tracked")]
    missing = [k for k in missing if k not in filled]
    if missing or bad_shape:
        parts = []
        if missing:
            parts.append(f"{len(missing)} of {len(target)} backbone tensors missing ({_short(missing)})")
        if bad_shape:
            parts.append(f"{len(bad_shape)} of other shapes ({_short(bad_shape, 2)})")
        raise _NoFit("; ".join(parts))
    for k in filled:
        tensors[k] = torch.zeros_like(target[k])
    for k, v in tensors.items():
        if v.is_floating_point() and not torch.isfinite(v).all():
            raise UserError(f"backbone tensor {k} ({ns[k]}) holds NaN or infinite values", exit_code=2)
    tensors = {k: tensors[k] for k in target}  # the backbone's own order
    return Mapping(layout, tensors, len(target) - len(filled), known, extra, filled, sequential, sorted(cast))


class _NoFit(UserError):
    """The state dict does not cover the backbone (the message: what is missing or of another shape)."""

    def __init__(self, message: str):
        super().__init__(message, exit_code=2)


def guess_resnet(sd: dict, prefix: str) -> str | None:
    """The ResNet name (``resnet50``, ``resnet18-w0.25``) whose shapes the backbone keys of ``sd`` have, if any."""
    ns = {k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix) and isinstance(v, torch.Tensor)}
    if "0.weight" in ns:
        ns = {(_sequential_to_torchvision(k) or k): v for k, v in ns.items()}
    if "conv1.weight" not in ns:
        return None
    blocks = []
    for i in range(1, 5):
        idx = {int(m.group(1)) for k in ns if (m := re.match(rf"^layer{i}\.(\d+)\.", k))}
        if not idx:
            return None
        blocks.append(max(idx) + 1)
    bottleneck = "layer1.0.conv3.weight" in ns

    depth = next(
        (
            d
            for d, (block, layers) in _DEPTHS.items()
            if list(layers) == blocks and (block.expansion == 4) == bottleneck
        ),
        None,
    )
    if depth is None:
        return None
    width = ns["conv1.weight"].shape[0] / 64
    return f"resnet{depth}" + (f"-w{width:g}" if width != 1 else "")


# ----------------------------------------------------------------------------------------------------------------
# the run directory


def imported_recipe(
    fmt: str,
    arch: str,
    scale: str,
    cifar_stem: bool | None,
    epochs: int | None,
    dataset: str | None = None,
    image_size: int | None = None,
    sets: list[str] | None = None,
):
    """The recipe of an imported run: ``scales.yaml[scale]`` (its dataset stand-ins, image size, workers), method
    ``imported:FORMAT``, ``model.backbone = arch``, ``model.cifar_stem`` from the weights, ``train.epochs`` =
    ``epochs`` (0 when unknown; the checkpoint says None), then ``--set`` overrides."""

    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}", exit_code=2)
    r = Recipe(method=f"imported:{fmt}", scale=scale)
    _merge_layer(r, _load_yaml("scales").get(scale, {}), f"scales.yaml:{scale}")
    layer: dict = {"model": {"backbone": arch, "cifar_stem": cifar_stem}, "train": {"epochs": epochs or 0}}
    if dataset is not None:
        check_dataset_name(dataset)
        layer.setdefault("data", {})["dataset"] = dataset
    if image_size is not None:
        layer.setdefault("data", {})["image_size"] = image_size
    for s in sets or []:
        sec, key, value = parse_override(s)
        if (sec, key) in (("model", "backbone"), ("model", "cifar_stem")):
            raise UserError(f"--set {sec}.{key}: an import takes it from --arch and the weights", exit_code=2)
        layer.setdefault(sec, {})[key] = value
    _merge_layer(r, layer, "import options")
    if r.train.precision == "auto":  # evaluation runs in fp32; an imported run was not trained here
        r.train.precision = "fp32"
    validate(r)
    return r


def default_run_dir(fmt: str, arch: str, scale: str, sha256: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", arch)
    return Path("runs") / f"imported-{fmt}-{safe}-{scale}-{sha256[:10]}"


@dataclass
class Imported:
    """What ``import_checkpoint`` wrote (or found already written): the run directory and the mapping report."""

    run_dir: Path
    fmt: str
    source: dict
    report: dict
    already: bool = False


def _check_out(out: Path, sha: str, recipe_hash: str) -> bool:
    """True when ``out`` already holds this very import (same file and recipe): nothing to do. A folder holding
    anything else is refused; a file in the way too."""
    import json

    if not out.exists():
        return False
    if not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder for the run directory", exit_code=2)
    if not any(out.iterdir()):
        return False
    try:
        info = json.loads((out / "run.json").read_text())
    except (OSError, ValueError):
        info = {}
    if (
        info.get("status") == "complete"
        and info.get("config_hash") == recipe_hash
        and (info.get("source") or {}).get("sha256") == sha
        and (out / "checkpoints" / "last.pt").exists()
    ):
        return True
    raise UserError(
        f"--out {out} already exists and holds something else; choose another folder (nothing was written)",
        exit_code=2,
    )


def import_checkpoint(
    path: Path,
    fmt: str = "auto",
    arch: str = "resnet50",
    out: Path | None = None,
    scale: str = "paper",
    epochs: int | None = None,
    key: str | None = None,
    allow_extra: bool = False,
    dataset: str | None = None,
    image_size: int | None = None,
    pretrain_dataset: str | None = None,
    sets: list[str] | None = None,
) -> Imported:
    """Import ``path`` as a run directory (see the module docstring); returns where and what was mapped."""

    if fmt not in FORMATS:
        raise UserError(f"unknown --format {fmt!r}; choose from {', '.join(FORMATS)}", exit_code=2)
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}", exit_code=2)
    if epochs is not None and epochs < 0:
        raise UserError(f"--epochs must be >= 0, got {epochs}", exit_code=2)
    path = Path(path)
    probe_recipe = imported_recipe("x", arch, scale, None, epochs, dataset, image_size, sets)  # bad options: exit 2
    obj = read_checkpoint(path)
    sha = sha256_of(path)
    top_keys = [str(k) for k in obj] if isinstance(obj, dict) else []
    sd, container = unwrap(obj, key, fmt)
    sd, ddp = strip_ddp(sd)
    keys = list(sd)

    # the backbone with the stem the weights have (a 3x3 conv1 is the CIFAR stem), at the scale's image size
    image = probe_recipe.data.image_size
    plain = build_backbone(arch, image, False)
    plain_sd = plain.state_dict()
    resnet = "conv1.weight" in plain_sd and plain_sd["conv1.weight"].dim() == 4 and "layer1.0.conv1.weight" in plain_sd
    if fmt == "auto":
        fmt = detect_format(keys, container, top_keys, resnet)
        auto = True
    else:
        auto = False
    layout = pick_layout(fmt, keys)
    cifar_stem = False
    if resnet:
        conv1 = _find_conv1(sd, layout.prefix)
        cifar_stem = conv1 is not None and conv1.dim() == 4 and tuple(conv1.shape[-2:]) == (3, 3)
    backbone = build_backbone(arch, image, True) if cifar_stem else plain
    target = dict(backbone.state_dict())
    try:
        m = map_state_dict(sd, layout, target, _classifier_names(backbone))
    except _NoFit as e:
        guess = guess_resnet(sd, layout.prefix) if resnet else None
        looks = f"; the file looks like {guess}" if guess and guess != arch else ""
        where = f"'{ddp}{layout.prefix}*'" if layout.prefix or ddp else "the top level"
        raise UserError(
            f"{path.name} ({layout.fmt} layout{' (auto)' if auto else ''}, backbone at {where}) does not fit "
            f"--arch {arch}: {e}{looks}",
            exit_code=2,
        ) from None
    m.extra = [ddp + k for k in m.extra]  # the file's own key names
    if m.extra and not allow_extra:
        raise UserError(
            f"{path.name}: {len(m.extra)} keys are neither {arch} backbone tensors nor a known part of a "
            f"{layout.fmt} checkpoint ({_short(m.extra)}); check --format/--arch, or pass --allow-extra to import "
            f"the backbone anyway (run.json lists them)",
            exit_code=2,
        )

    recipe = imported_recipe(fmt, arch, scale, cifar_stem, epochs, dataset, image_size, sets)
    out = Path(out) if out is not None else default_run_dir(fmt, arch, scale, sha)
    source = {"file": path.name, "sha256": sha, "format": fmt}
    report = {
        "container": container or None,
        "ddp_prefix": ddp or None,
        "backbone_prefix": layout.prefix or None,
        "layout": layout.describe,
        "detected": auto,
        "sequential_names": m.sequential,
        "cifar_stem": cifar_stem,
        "mapped": m.mapped,
        "backbone_tensors": len(target),
        "known_parts": m.known,
        "extra": m.extra,
        "filled": m.filled,
        "cast": m.cast,
        "entries": top_keys if container else [],
    }
    if _check_out(out, sha, recipe.hash()):
        return Imported(out, fmt, source, report, already=True)
    try:
        check_writable_dir(out)
    except OSError as x:
        raise UserError(f"cannot write the run directory {out} ({x.strerror or x}); nothing was imported") from None
    save_checkpoint(
        {
            "format": FORMAT,
            "version": __version__,
            "method": recipe.method,
            "backbone": recipe.model.backbone,
            "config_hash": recipe.hash(),
            "epoch": epochs,
            "step_in_epoch": 0,
            "step": 0,
            "model": {f"backbone.{k}": v for k, v in m.tensors.items()},
            "source": source,
        },
        out / "checkpoints" / "last.pt",
        keep_previous=False,
    )

    atomic_write_text(out / "config.yaml", recipe.dump())
    write_run_json(
        out,
        {
            "method": recipe.method,
            "scale": recipe.scale,
            "config_hash": recipe.hash(),
            "status": "complete",
            "epochs_done": epochs,
            "epochs": epochs,
            "steps_done": 0,
            "dataset": recipe.data.dataset,
            "pretrain_dataset": pretrain_dataset or "unknown",
            "backbone": recipe.model.backbone,
            "seed": recipe.train.seed,
            "precision": recipe.train.precision,
            "source": source,
            "import": report,
        },
    )
    return Imported(out, fmt, source, report)


def _find_conv1(sd: dict, prefix: str) -> torch.Tensor | None:
    for k in (f"{prefix}conv1.weight", f"{prefix}0.weight"):
        v = sd.get(k)
        if isinstance(v, torch.Tensor):
            return v
    return None
