"""Typed recipes: every hyperparameter lives in ``recipes/*.yaml``, none in code.

A run's recipe is built in layers, later layers winning:
``recipes/scales.yaml[scale]`` -> ``recipes/METHOD.yaml`` (top level) -> ``recipes/METHOD.yaml: scales[scale]``
-> CLI options -> ``--set section.key=value`` overrides. Unknown keys and wrongly typed values are
errors naming the key. ``Recipe.hash()`` is a stable hash of everything that changes the result (it
excludes purely operational settings such as the number of loader workers), used for provenance and
to skip work already in the results store.

A method defined outside the package (``cssl_bench.methods.plugins``) brings its own recipe YAML of the same
schema; the plugin loader registers it here (``register_plugin_recipe``, checked at every scale), after which
``load_recipe`` builds it like a built-in one and records the plugin reference as ``Recipe.plugin``.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import math
import typing
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import yaml

from cssl_bench import UserError

SCALES = ("tiny", "small", "paper")


@dataclass
class ModelCfg:
    backbone: str = "resnet50"
    cifar_stem: bool | None = None  # None: automatic (CIFAR stem for images of 64 px and less)
    zero_init_residual: bool = False
    channels_last: bool = True
    sync_bn: bool = False  # with several processes: BN statistics over the global batch (SimCLR's "global BN")


@dataclass
class DataCfg:
    dataset: str = "embedded"
    image_size: int = 224
    embedded_size: int = 32
    embedded_train: int = 10000
    embedded_test: int = 2000
    embedded_seed: int = 0
    embedded_version: int = 2  # generator version: 2 = natural-category statistics (data/embedded_v2.py); 1 = the first
    embedded_texture_contrast: float = 0.45  # generator variant: texture's share of the object's brightness
    embedded_class_color: float = 0.0  # generator variant: probability that an image's colour is its class's
    embedded_background_jitter: float = 1.0  # generator variant: scale of the per-image background level and tint
    workers: int = 2
    loader: str = "auto"  # auto | torchvision | ffcv
    skip_bad: bool = False


# the embedded generator's variant options; at their DataCfg defaults they give the dataset of every committed result
EMBEDDED_VARIANTS = ("embedded_texture_contrast", "embedded_class_color", "embedded_background_jitter")


@dataclass
class AugmentCfg:
    """The SSL augmentation (docs/protocols.md, section 1). ``views``: two | multicrop | looc | single."""

    views: str = "two"
    crop_scale: list[float] = field(default_factory=lambda: [0.2, 1.0])
    color: dict = field(
        default_factory=lambda: {
            "brightness": 0.4,
            "contrast": 0.4,
            "saturation": 0.4,
            "hue": 0.1,
            "p": 0.8,
            "p_gray": 0.2,
        }
    )
    blur_p: float = 0.5
    blur_p2: float | None = None  # BYOL's asymmetric pair: the second view's blur probability
    solarize_p: float = 0.0
    solarize_p2: float | None = None
    rotation: str = "none"  # none | independent | same (MoCo + Rotation rows of LooC Table 1)
    # multi-crop (SwAV)
    n_large: int = 2
    n_small: int = 6
    small_size: int = 96
    small_crop_scale: list[float] = field(default_factory=lambda: [0.05, 0.14])
    large_crop_scale: list[float] = field(default_factory=lambda: [0.14, 1.0])
    # LooC leave-one-out
    looc_augment: list[str] = field(default_factory=lambda: ["color", "rotation"])
    # LooC's variance heads: the augmentations that get a variant embedding space Z_i and a view k_i
    # (LooC Table 5 varies them with every augmentation applied). None = every looc_augment entry;
    # [] = only the invariant space Z0 (MoCo v2 with the atomic augmentations).
    looc_heads: list[str] | None = None
    texture_transfer: str = "procedural"
    texture_p: float = 0.8

    @property
    def variance_heads(self) -> list[str]:
        """The augmentations with a LooC variance head, in head order (``looc_heads``, or every ``looc_augment``)."""
        return list(self.looc_augment if self.looc_heads is None else self.looc_heads)


@dataclass
class OptimCfg:
    name: str = "sgd"  # sgd | lars | adamw
    base_lr: float = 0.05  # lr = base_lr * batch / 256 when lr_scaling is "linear"
    lr_scaling: str = "linear"  # linear | none
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"  # cosine | multistep | constant
    warmup_epochs: float = 0.0
    warmup_start: float = 0.0  # the linear warm-up starts at this fraction of the peak lr (SwAV: 0.3 / 4.8)
    final_lr: float = 0.0  # the cosine ends at this fraction of the peak lr (SwAV: 0.0048 / 4.8)
    schedule_unit: str = (
        "iteration"  # iteration | epoch: the lr changes every step, or once at each epoch start (MoCo, SimSiam code)
    )
    milestones: list[float] = field(default_factory=list)  # epochs, for multistep
    gamma: float = 0.1
    exclude_bn_bias: bool = False  # BYOL/SimCLR: no weight decay and no LARS adaptation for BN and bias
    fixed_lr: list[str] = field(
        default_factory=list
    )  # parameter-name prefixes whose lr stays fixed (SimSiam predictor)
    lars_trust: float = 0.001


@dataclass
class TrainCfg:
    epochs: int = 200
    batch_size: int = 256
    seed: int = 0
    precision: str = (
        "fp32"  # fp32 | bf16 | fp16 | auto (load_recipe resolves auto to bf16 or fp32: cssl_bench/precision.py)
    )
    compile: bool = False
    save_epochs: list[int] = field(default_factory=list)  # extra checkpoints kept (epoch budgets of the methods table)
    log_every: int = 10
    checkpoint_every: int = 0  # also checkpoint every N steps inside an epoch (0 = at epoch ends only)


@dataclass
class Recipe:
    method: str
    scale: str
    model: ModelCfg = field(default_factory=ModelCfg)
    data: DataCfg = field(default_factory=DataCfg)
    augment: AugmentCfg = field(default_factory=AugmentCfg)
    optim: OptimCfg = field(default_factory=OptimCfg)
    train: TrainCfg = field(default_factory=TrainCfg)
    params: dict = field(default_factory=dict)  # method hyperparameters, validated by the method
    # A method defined outside the package (cssl_bench/methods/plugins.py): where its code and recipe came from
    # ({"kind": "entry_point" | "file", "name", ...}). Provenance, not a hyperparameter: never hashed (like the code
    # version), in config.yaml only when set, so built-in recipes dump and hash exactly as before.
    plugin: dict | None = None
    # train.precision as asked when load_recipe resolved ``auto`` (run.json ``precision_requested``); not a recipe
    # key: neither hashed nor in config.yaml, which hold the precision used
    precision_requested = None
    # the plugin reference of the code a reloaded run was rebuilt with, when it differs from ``plugin`` (a method
    # file edited, another distribution version since the pretraining; methods.build_method); None otherwise
    plugin_loaded = None

    # keys that do not change results (excluded from the hash)
    OPERATIONAL = {
        ("data", "workers"),
        ("data", "loader"),
        ("train", "log_every"),
        ("train", "compile"),
        ("data", "skip_bad"),
    }
    # keys added after records existed: left out of the hash while at their default, so the hashes of
    # the runs made before them (which behave exactly like the default) stay valid
    HASH_OMIT_IF_DEFAULT = {
        ("augment", "looc_heads"): None,
        ("optim", "warmup_start"): 0.0,
        ("optim", "final_lr"): 0.0,
        ("optim", "schedule_unit"): "iteration",
        **{("data", f.name): f.default for f in dataclasses.fields(DataCfg) if f.name in EMBEDDED_VARIANTS},
        # generator version 1 hashes as before the key existed; version 2 is part of the hash
        ("data", "embedded_version"): 1,
    }

    @property
    def lr(self) -> float:
        if self.optim.lr_scaling == "linear":
            return self.optim.base_lr * self.train.batch_size / 256
        return self.optim.base_lr

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        if d.get("plugin") is None:
            d.pop("plugin", None)
        return d

    def hash_dict(self, with_seed: bool = True) -> dict:
        """The recipe as hashed: without the operational keys (and the seed when ``with_seed`` is False)."""
        d = self.to_dict()
        d.pop("plugin", None)  # provenance, not a hyperparameter
        for sec, key in self.OPERATIONAL:
            d[sec].pop(key, None)
        for (sec, key), default in self.HASH_OMIT_IF_DEFAULT.items():
            if d[sec].get(key, default) == default:
                d[sec].pop(key, None)
        if not with_seed:
            d["train"].pop("seed", None)
        return d

    def hash(self) -> str:
        return hashlib.sha256(json.dumps(self.hash_dict(), sort_keys=True).encode()).hexdigest()[:12]

    def dump(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


SECTIONS = {"model": ModelCfg, "data": DataCfg, "augment": AugmentCfg, "optim": OptimCfg, "train": TrainCfg}


def _check_type(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_type(value, args[0], where)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if tp is float and isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            pass
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise UserError(f"recipe key {where}: expected a list, got {value!r}", exit_code=2)
        (inner,) = typing.get_args(tp) or (Any,)
        return [_check_type(v, inner, where) for v in value] if inner is not Any else list(value)
    if tp in (int, float, str, bool, dict):
        if tp is int and isinstance(value, bool) or not isinstance(value, tp):
            raise UserError(f"recipe key {where}: expected {tp.__name__}, got {value!r}", exit_code=2)
    return value


def _apply(section_obj: Any, values: dict, where: str) -> None:
    hints = typing.get_type_hints(type(section_obj))
    names = {f.name for f in dataclasses.fields(section_obj)}
    for k, v in values.items():
        if k not in names:
            raise UserError(f"unknown recipe key {where}.{k}; valid keys: {', '.join(sorted(names))}", exit_code=2)
        setattr(section_obj, k, _check_type(v, hints[k], f"{where}.{k}"))


# Recipes of methods defined outside the package, registered by cssl_bench.methods.plugins for this process:
# name -> (the recipe YAML's content, its file for messages, the plugin reference stored as Recipe.plugin)
_PLUGIN_RECIPES: dict[str, tuple[dict, str, dict]] = {}
# Top-level keys of a recipe YAML besides the sections: metadata, and ``impl`` (built-in recipes only: which class)
RECIPE_META = ("description", "paper")


def _load_yaml(name: str) -> dict:
    if name in _PLUGIN_RECIPES:
        return copy.deepcopy(_PLUGIN_RECIPES[name][0])
    path = resources.files("cssl_bench") / "recipes" / f"{name}.yaml"
    if not path.is_file():
        raise UserError(f"no recipe {name}")
    return yaml.safe_load(path.read_text()) or {}


def builtin_methods() -> list[str]:
    """The methods of the package: one YAML each in ``cssl_bench/recipes/``."""
    base = resources.files("cssl_bench") / "recipes"
    return sorted(p.name[:-5] for p in base.iterdir() if p.name.endswith(".yaml") and p.name != "scales.yaml")


def available_methods() -> list[str]:
    """The built-in methods and the plugin methods registered in this process (``register_plugin_recipe``)."""
    return sorted(set(builtin_methods()) | set(_PLUGIN_RECIPES))


def check_recipe_layers(m, where: str, name: str = "plugin") -> dict:
    """A plugin's recipe YAML checked as ``load_recipe`` would use it, at every scale, before any run: the same
    schema as ``cssl_bench/recipes/*.yaml`` (``description``, ``paper``, ``params``, the sections, and ``scales``
    with ``tiny`` / ``small`` / ``paper`` sections of the same keys). Unknown keys, wrongly typed values and values
    ``validate`` refuses are one-line errors naming ``where`` (the file). ``params`` are the method's: its class
    validates them when it is built. Returns ``m``."""
    if not isinstance(m, dict):
        raise UserError(f"{where}: a recipe must be a mapping of sections (see cssl_bench/recipes/*.yaml)", exit_code=2)
    if "impl" in m:
        raise UserError(f"{where}: impl is for built-in recipes (the plugin is the implementation); remove it", 2)
    for key in RECIPE_META:
        if key in m and not isinstance(m[key], str):
            raise UserError(f"{where}: {key} must be a string, got {m[key]!r}", exit_code=2)
    scales = m.get("scales") or {}
    if not isinstance(scales, dict):
        raise UserError(f"{where}: scales must map scale names ({', '.join(SCALES)}) to sections", exit_code=2)
    bad = [s for s in scales if s not in SCALES]
    if bad:
        raise UserError(f"{where}: unknown scale {bad[0]!r} under scales; choose from {', '.join(SCALES)}", 2)
    for scale, layer in scales.items():
        if layer is None:
            continue
        if not isinstance(layer, dict):
            raise UserError(f"{where}: scales.{scale} must be a mapping of sections", exit_code=2)
        nested = [k for k in layer if k in (*RECIPE_META, "impl", "scales")]
        if nested:
            raise UserError(f"{where}: scales.{scale}.{nested[0]} belongs at the top level of the recipe", 2)
    for key, layer in [("params", m)] + [(f"scales.{s}.params", layer or {}) for s, layer in scales.items()]:
        if not isinstance(layer.get("params") or {}, dict):
            raise UserError(f"{where}: {key} must be a mapping of the method's parameters", exit_code=2)
    for scale in SCALES:
        r = Recipe(method=name, scale=scale)
        try:
            _merge_layer(r, _load_yaml("scales").get(scale, {}), f"scales.yaml:{scale}")
            _merge_layer(r, m, where)
            _merge_layer(r, scales.get(scale) or {}, f"{where}:scales.{scale}")
            validate(r)
        except UserError as e:
            raise UserError(f"{where}: {e} (at scale {scale})", exit_code=2) from None
    return m


def register_plugin_recipe(name: str, recipe_yaml: dict, where: str, ref: dict) -> None:
    """Make ``load_recipe(name, ...)`` build ``name``'s recipe from ``recipe_yaml`` (the content of the file
    ``where``) and record ``ref`` as ``Recipe.plugin``; ``check_recipe_layers`` first. Called by
    ``cssl_bench.methods.plugins`` (this module knows no method code)."""
    if name in builtin_methods() or name == "scales":
        raise UserError(f"{where}: a plugin method cannot be called {name!r}, a built-in method's name", exit_code=2)
    check_recipe_layers(recipe_yaml, where, name)
    _PLUGIN_RECIPES[name] = (copy.deepcopy(recipe_yaml), where, dict(ref))


def plugin_recipe(name: str) -> tuple[dict, str, dict] | None:
    """(recipe YAML content, its file, plugin reference) of a registered plugin method, or None."""
    return _PLUGIN_RECIPES.get(name)


def _merge_layer(recipe: Recipe, layer: dict, where: str) -> None:
    for sec, values in layer.items():
        if sec in ("scales", "description", "paper", "impl"):
            continue
        if sec == "params":
            recipe.params.update(copy.deepcopy(values or {}))
        elif sec in SECTIONS:
            if not isinstance(values, dict):
                raise UserError(f"recipe section {where}.{sec} must be a mapping")
            _apply(getattr(recipe, sec), values, f"{sec}")
        else:
            raise UserError(
                f"unknown recipe section {sec!r} in {where}; valid: {', '.join(list(SECTIONS) + ['params'])}",
                exit_code=2,
            )


def parse_override(text: str) -> tuple[str, str, Any]:
    """``section.key=value`` (value parsed as YAML) -> (section, key, value)."""
    if "=" not in text or "." not in text.split("=", 1)[0]:
        raise UserError(f"override {text!r} must look like section.key=value (e.g. optim.base_lr=0.1)", exit_code=2)
    lhs, rhs = text.split("=", 1)
    sec, key = lhs.split(".", 1)
    try:
        value = yaml.safe_load(rhs)
    except yaml.YAMLError as e:
        why = getattr(e, "problem", None) or type(e).__name__
        raise UserError(
            f"override {text!r}: the value {rhs!r} is not valid YAML ({why}); quote it or fix the brackets", exit_code=2
        ) from None
    return sec, key, value


def load_recipe(
    method: str, scale: str = "tiny", overrides: dict | None = None, sets: list[str] | None = None
) -> Recipe:
    """Build the recipe of ``method`` at ``scale``; ``overrides`` is {section: {key: value}}. ``train.precision: auto``
    is resolved once every layer is merged, for this machine's device (``resolve_auto_precision``)."""
    if scale not in SCALES:
        raise UserError(f"unknown scale {scale!r}; choose from {', '.join(SCALES)}", exit_code=2)
    methods = available_methods()
    if method not in methods:
        raise UserError(f"unknown method {method!r}; choose from {', '.join(methods)}", exit_code=2)
    recipe = Recipe(method=method, scale=scale)
    _merge_layer(recipe, _load_yaml("scales").get(scale, {}), f"scales.yaml:{scale}")
    m = _load_yaml(method)
    plugin = _PLUGIN_RECIPES.get(method)
    if plugin is not None:  # checked at every scale when registered; the reference is the run's provenance
        recipe.plugin = dict(plugin[2])
    _merge_layer(recipe, m, f"{method}.yaml")
    _merge_layer(recipe, (m.get("scales") or {}).get(scale) or {}, f"{method}.yaml:scales.{scale}")
    layer: dict = copy.deepcopy(overrides or {})
    for s in sets or []:
        sec, key, value = parse_override(s)
        layer.setdefault(sec, {})[key] = value
    _merge_layer(recipe, layer, "overrides")
    resolve_auto_precision(recipe)
    validate(recipe)
    return recipe


def resolve_auto_precision(recipe: Recipe, device_type: str | None = None) -> Recipe:
    """Replace ``train.precision: auto`` by what it stands for on ``device_type`` (default: the device a run on
    this machine uses, CUDA if torch sees one, else the CPU), ``bf16`` or ``fp32`` (cssl_bench/precision.py),
    and keep the request in ``recipe.precision_requested``. The recipe, its hash, config.yaml and run.json hold the
    precision used: a bf16 run never shares a hash with an fp32 run, and fp32 from ``auto`` hashes as plain fp32.
    torch is imported (by the resolution) only when the recipe asks for ``auto``."""
    if recipe.train.precision == "auto":
        from cssl_bench.precision import resolve_precision

        recipe.train.precision = resolve_precision("auto", device_type)
        recipe.precision_requested = "auto"
    return recipe


def check_recipe_dict(d, where: str = "config.yaml", hint: str = "") -> dict:
    """``d`` if it can be a recipe (a mapping with a method and a scale); else one line naming ``where``."""
    if not isinstance(d, dict) or not isinstance(d.get("method"), str) or not isinstance(d.get("scale"), str):
        raise UserError(f"{where} is empty or not a cssl-bench recipe (no method and scale){hint}")
    return d


def recipe_from_dict(d: dict) -> Recipe:
    """The recipe a run directory's ``config.yaml`` holds. A config written before ``data.embedded_version``
    existed read generator version 1, so a missing key means 1 (not today's default). A plugin method's config
    also holds its ``plugin`` reference, from which ``methods.build_method`` re-imports its code."""
    check_recipe_dict(d)
    plugin = d.get("plugin")
    if plugin is not None and not (isinstance(plugin, dict) and plugin.get("kind") in ("entry_point", "file")):
        raise UserError(f"config.yaml: plugin must be a plugin reference (kind entry_point or file), got {plugin!r}")
    r = Recipe(method=d["method"], scale=d["scale"], plugin=copy.deepcopy(plugin))
    if isinstance(d.get("data"), dict) and "embedded_version" not in d["data"]:
        r.data.embedded_version = 1
    _merge_layer(r, {k: v for k, v in d.items() if k not in ("method", "scale", "plugin")}, "config.yaml")
    return r


def validate(r: Recipe) -> None:
    if r.train.epochs < 0:
        raise UserError(f"epochs must be >= 0, got {r.train.epochs}", exit_code=2)
    if r.train.batch_size <= 0:
        raise UserError(f"batch size must be > 0, got {r.train.batch_size}", exit_code=2)
    if r.data.image_size <= 0:
        raise UserError(f"image size must be > 0, got {r.data.image_size}", exit_code=2)
    if r.data.workers < 0:
        raise UserError(f"data.workers (--workers) must be >= 0, got {r.data.workers}", exit_code=2)
    if r.data.embedded_size < 8:
        raise UserError(f"data.embedded_size must be at least 8 (pixels), got {r.data.embedded_size}", exit_code=2)
    for key in ("embedded_train", "embedded_test"):
        if getattr(r.data, key) < 1:
            raise UserError(f"data.{key} must be >= 1, got {getattr(r.data, key)}", exit_code=2)
    if not math.isfinite(r.optim.base_lr) or r.optim.base_lr < 0:
        raise UserError(f"optim.base_lr (--lr) must be a finite number >= 0, got {r.optim.base_lr}", exit_code=2)
    for key in ("weight_decay", "momentum"):
        v = getattr(r.optim, key)
        if not math.isfinite(v) or v < 0:
            raise UserError(f"optim.{key} must be a finite number >= 0, got {v}", exit_code=2)
    for key in ("warmup_start", "final_lr"):
        v = getattr(r.optim, key)
        if not 0.0 <= v <= 1.0:
            raise UserError(
                f"optim.{key} is a fraction of the peak learning rate, between 0 and 1; got {v}", exit_code=2
            )
    if r.train.log_every < 1:
        raise UserError(f"train.log_every must be >= 1 (steps), got {r.train.log_every}", exit_code=2)
    if r.train.checkpoint_every < 0:
        raise UserError(
            f"train.checkpoint_every must be >= 0 (0: at epoch ends only), got {r.train.checkpoint_every}", exit_code=2
        )
    bad = [e for e in r.train.save_epochs if e < 0]
    if bad:
        raise UserError(f"train.save_epochs (--save-epochs) must be epochs >= 0, got {bad[0]}", exit_code=2)
    for key in EMBEDDED_VARIANTS:
        v = getattr(r.data, key)
        if not 0.0 <= v <= 1.0:
            raise UserError(f"data.{key} must be between 0 and 1, got {v}", exit_code=2)
    if r.data.embedded_version not in (1, 2):
        raise UserError(f"data.embedded_version must be 1 or 2, got {r.data.embedded_version}", exit_code=2)
    if r.data.embedded_version != 1:
        changed = [k for k in EMBEDDED_VARIANTS if getattr(r.data, k) != getattr(DataCfg, k)]
        if changed:
            raise UserError(
                f"data.{changed[0]} is a variant of the embedded generator version 1; "
                f"add data.embedded_version=1 to use it",
                exit_code=2,
            )
    choices = {
        ("optim", "name"): ("sgd", "lars", "adamw"),
        ("optim", "schedule"): ("cosine", "multistep", "constant"),
        ("train", "precision"): ("fp32", "bf16", "fp16", "auto"),
        ("data", "loader"): ("auto", "torchvision", "ffcv"),
        ("augment", "views"): ("two", "multicrop", "looc", "single"),
        ("augment", "rotation"): ("none", "independent", "same"),
        ("optim", "lr_scaling"): ("linear", "none"),
        ("optim", "schedule_unit"): ("iteration", "epoch"),
    }
    for (sec, key), valid in choices.items():
        v = getattr(getattr(r, sec), key)
        if v not in valid:
            raise UserError(f"{sec}.{key} must be one of {', '.join(valid)}, got {v!r}", exit_code=2)
    gray_first = r.augment.color.get("gray_first", False)
    if not isinstance(gray_first, bool):
        raise UserError(f"augment.color.gray_first must be true or false, got {gray_first!r}", exit_code=2)
    for a in r.augment.looc_augment:
        if a not in ("color", "rotation", "texture"):
            raise UserError(f"unknown LooC augmentation {a!r}; choose from color, rotation, texture", exit_code=2)
    heads = r.augment.looc_heads
    if heads is not None:
        missing = [h for h in heads if h not in r.augment.looc_augment]
        if missing:
            raise UserError(
                f"augment.looc_heads names {', '.join(missing)}, which augment.looc_augment "
                f"({', '.join(r.augment.looc_augment) or 'empty'}) does not apply",
                exit_code=2,
            )
        if len(set(heads)) != len(heads):
            raise UserError(f"augment.looc_heads lists an augmentation twice: {heads}", exit_code=2)
        if list(heads) == list(r.augment.looc_augment):
            r.augment.looc_heads = None  # the default spelled out: one recipe, one hash
