"""Evaluation: items from every training format, metrics, the judge and `lightning-ft eval`
(`lightning_ft.eval.evaluate`). Kept free of imports from `lightning_ft.algorithms`, which imports the callbacks that
import `lightning_ft.eval.items`."""

from lightning_ft.eval.bootstrap import paired_bootstrap
from lightning_ft.eval.items import EvalItem, load_items
from lightning_ft.eval.reward import score_pairs

__all__ = ["EvalItem", "load_items", "paired_bootstrap", "score_pairs"]
