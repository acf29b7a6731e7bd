"""Loss functions: tensors in, losses out. Nothing here imports the rest of lightning_ft."""

from lightning_ft.losses.ewc import ewc_gradient, ewc_penalty
from lightning_ft.losses.logps import packed_sequence_logps, sequence_logps, token_entropy, token_logps
from lightning_ft.losses.preference import (
    bradley_terry_loss,
    dpo_loss,
    hinge_dpo_loss,
    ipo_loss,
    kto_loss,
    orpo_loss,
    robust_dpo_loss,
    sigmoid_dpo_loss,
    simpo_loss,
)
from lightning_ft.losses.rl import (
    adaptive_kl_coef,
    clipped_policy_loss,
    clipped_value_loss,
    explained_variance,
    gae,
    group_advantages,
    kl_k1,
    kl_k3,
    masked_mean,
    whiten,
)
from lightning_ft.losses.sft import chunked_cross_entropy, cross_entropy, token_cross_entropy

__all__ = [
    "adaptive_kl_coef",
    "bradley_terry_loss",
    "chunked_cross_entropy",
    "clipped_policy_loss",
    "clipped_value_loss",
    "cross_entropy",
    "dpo_loss",
    "ewc_gradient",
    "ewc_penalty",
    "explained_variance",
    "gae",
    "group_advantages",
    "hinge_dpo_loss",
    "ipo_loss",
    "kl_k1",
    "kl_k3",
    "kto_loss",
    "masked_mean",
    "orpo_loss",
    "packed_sequence_logps",
    "robust_dpo_loss",
    "sequence_logps",
    "sigmoid_dpo_loss",
    "simpo_loss",
    "token_cross_entropy",
    "token_entropy",
    "token_logps",
    "whiten",
]
