"""Fine-tuning recipes (one file per method) and the loop that runs them.

Every module of this package is imported here, and a recipe registers itself in ``RECIPES`` when its
module is imported: a new method is a new file in this folder, nothing else to edit.
"""

import importlib
import pkgutil

from .config import TrainConfig
from .loop import train
from .recipe import RECIPES, Recipe, get_recipe, run_settings

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["RECIPES", "Recipe", "TrainConfig", "get_recipe", "run_settings", "train"]
