"""Training algorithms, one LightningModule each."""

from lightning_ft.algorithms.base import FineTuneModule
from lightning_ft.algorithms.dpo import DPO
from lightning_ft.algorithms.ewc import EWC
from lightning_ft.algorithms.grpo import GRPO
from lightning_ft.algorithms.ppo import PPO
from lightning_ft.algorithms.reward import RewardModel
from lightning_ft.algorithms.sft import SFT
from lightning_ft.algorithms.vlm import VisionLanguageSFT

__all__ = ["DPO", "EWC", "GRPO", "PPO", "SFT", "FineTuneModule", "RewardModel", "VisionLanguageSFT"]
