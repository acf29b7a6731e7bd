"""Evaluation: metrics and evaluators over trained models."""

from lightning_ft.eval.reward import score_pairs

__all__ = ["score_pairs"]
