"""Method registry: ``build_method(recipe)``. A built-in recipe's ``method`` names a YAML in ``recipes/``
whose ``impl`` selects the implementation (``moco-rot`` is MoCo with rotation, etc.); a plugin recipe
(``Recipe.plugin`` set: a method from an entry point or a ``--method-file``, ``methods/plugins.py``) names
the plugin's class.

The names below are the API a plugin method builds on (docs/adding-a-method.md): ``Method`` (the contract),
``parse_params`` (its ``params`` dataclass from the recipe), ``output_std`` (the collapse monitor), ``mlp``
(heads), ``make_target`` / ``cosine_momentum`` (momentum encoders), ``gather_with_grad`` (batch statistics
over every process) and ``losses``.
"""

from __future__ import annotations

import inspect

from cssl_bench import UserError
from cssl_bench.config import Recipe
from cssl_bench.nn.distributed import gather_with_grad
from cssl_bench.nn.heads import mlp

from . import losses
from .base import Method, cosine_momentum, make_target, output_std, parse_params
from .byol import BYOL
from .looc import LooC
from .moco import MoCo
from .simclr import SimCLR
from .simsiam import SimSiam
from .supervised import Supervised
from .swav import SwAV

__all__ = [
    "Method",
    "build_method",
    "cosine_momentum",
    "gather_with_grad",
    "losses",
    "make_target",
    "mlp",
    "output_std",
    "parse_params",
]

IMPLEMENTATIONS = {
    "simclr": SimCLR,
    "moco": MoCo,
    "byol": BYOL,
    "swav": SwAV,
    "simsiam": SimSiam,
    "looc": LooC,
    "supervised": Supervised,
}


def implementation(recipe: Recipe) -> str:
    from cssl_bench.config import _load_yaml

    return _load_yaml(recipe.method).get("impl", recipe.method)


def build_method(recipe: Recipe, num_classes: int = 10):
    """The method of ``recipe``, initialised. ``num_classes`` reaches the methods that take it (supervised; a
    plugin whose constructor has a ``num_classes`` parameter)."""
    if recipe.plugin:
        return _build_plugin(recipe, num_classes)
    if recipe.method.startswith("imported:"):  # a backbone written by `cssl-bench import` (pipeline/importing.py)
        return Method(recipe)
    impl = implementation(recipe)
    if impl not in IMPLEMENTATIONS:
        raise UserError(f"recipe {recipe.method} names unknown implementation {impl!r}", exit_code=2)
    cls = IMPLEMENTATIONS[impl]
    if cls is Supervised:
        return cls(recipe, num_classes=num_classes)
    return cls(recipe)


def _build_plugin(recipe: Recipe, num_classes: int):
    from cssl_bench.methods import plugins

    cls, loaded = plugins.plugin_class(recipe)
    recipe.plugin_loaded = loaded  # the code a reloaded run is rebuilt with, where it changed (records say so)
    kw = {"num_classes": num_classes} if "num_classes" in inspect.signature(cls).parameters else {}
    try:
        return cls(recipe, **kw)
    except UserError as e:  # e.g. parse_params: an unknown params key of the plugin's recipe or of --set
        raise UserError(f"{plugins.describe_ref(recipe.plugin)}: {e}", exit_code=2) from None
