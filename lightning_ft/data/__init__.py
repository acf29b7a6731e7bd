"""Data: sources, record formats, chat-template tokenization with label masks, collators and data modules."""

from lightning_ft.data.mixing import MixSource
from lightning_ft.data.multimodal import MultimodalData
from lightning_ft.data.preference import PreferenceData
from lightning_ft.data.prompts import PromptData
from lightning_ft.data.sft import ChatData, InstructionData, SFTData
from lightning_ft.data.sources import DataError
from lightning_ft.data.text import TextData

__all__ = [
    "ChatData",
    "DataError",
    "InstructionData",
    "MixSource",
    "MultimodalData",
    "PreferenceData",
    "PromptData",
    "SFTData",
    "TextData",
]
