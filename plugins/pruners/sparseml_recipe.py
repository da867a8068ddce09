"""Loading a SparseML recipe (YAML text) into its ``ScheduledModifierManager``: shared by the gradual pruner and
the INT8 step's quantization-aware fine-tuning (``sparse_runtime/qat.py``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from tsbench_core.errors import CellError


def recipe_text(recipe: str | None, generate: Any) -> str:
    """The text of the recipe file ``recipe``, or ``generate()`` when there is none."""
    return Path(recipe).expanduser().read_text(encoding="utf-8") if recipe is not None else generate()


def manager_from_recipe(manager_cls: Any, text: str, what: str = "recipe") -> Any:
    """``manager_cls.from_yaml`` on ``text``; a recipe SparseML rejects is a ``CellError`` naming ``what``."""
    with tempfile.TemporaryDirectory() as tmp:  # SparseML reads recipes from files most reliably
        path = Path(tmp) / "recipe.yaml"
        path.write_text(text, encoding="utf-8")
        try:
            return manager_cls.from_yaml(str(path))
        except Exception as exc:
            raise CellError(f"SparseML rejected the {what}: {type(exc).__name__}: {exc}") from exc
