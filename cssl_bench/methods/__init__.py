"""Method registry: ``build_method(recipe)``; the recipe's ``method`` names a YAML in ``recipes/``
whose ``params.impl`` selects the implementation (``moco-rot`` is MoCo with rotation, etc.)."""

from __future__ import annotations

from cssl_bench import UserError
from cssl_bench.config import Recipe

from .byol import BYOL
from .looc import LooC
from .moco import MoCo
from .simclr import SimCLR
from .simsiam import SimSiam
from .supervised import Supervised
from .swav import SwAV

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
    impl = implementation(recipe)
    if impl not in IMPLEMENTATIONS:
        raise UserError(f"recipe {recipe.method} names unknown implementation {impl!r}", exit_code=2)
    cls = IMPLEMENTATIONS[impl]
    if cls is Supervised:
        return cls(recipe, num_classes=num_classes)
    return cls(recipe)
