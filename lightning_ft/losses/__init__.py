"""Loss functions: tensors in, losses out. Nothing here imports the rest of lightning_ft."""

from lightning_ft.losses.preference import bradley_terry_loss, dpo_loss, kto_loss, orpo_loss, simpo_loss
from lightning_ft.losses.sft import chunked_cross_entropy, cross_entropy, token_cross_entropy

__all__ = [
    "bradley_terry_loss",
    "chunked_cross_entropy",
    "cross_entropy",
    "dpo_loss",
    "kto_loss",
    "orpo_loss",
    "simpo_loss",
    "token_cross_entropy",
]
