"""Data: sources, record formats, chat-template tokenization with label masks, collators and data modules."""

from lightning_ft.data.multimodal import MultimodalData
from lightning_ft.data.preference import PreferenceData
from lightning_ft.data.prompts import PromptData
from lightning_ft.data.sft import ChatData, InstructionData, SFTData
from lightning_ft.data.sources import DataError

__all__ = [
    "ChatData",
    "DataError",
    "InstructionData",
    "MultimodalData",
    "PreferenceData",
    "PromptData",
    "SFTData",
]
