"""Loss functions: tensors in, losses out. Nothing here imports the rest of lightning_ft."""

from lightning_ft.losses.sft import chunked_cross_entropy, cross_entropy, token_cross_entropy

__all__ = ["chunked_cross_entropy", "cross_entropy", "token_cross_entropy"]
