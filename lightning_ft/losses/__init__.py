"""Loss functions: tensors in, losses out. Nothing here imports the rest of lightning_ft."""

from lightning_ft.losses.sft import token_cross_entropy

__all__ = ["token_cross_entropy"]
