"""Assemble a LLaVA from a vision encoder (CLIP or SigLIP), a language model and a new projector, and write it as a
directory that `AutoModelForImageTextToText` and `AutoProcessor` load (the input of stage-1 training)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoConfig,
    AutoImageProcessor,
    AutoModel,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
)

from lightning_ft.errors import UsageError
from lightning_ft.model.spec import DTypeName, ModelSpec, torch_dtype

# Vision configs and how many non-patch tokens their encoder adds (CLIP: one class token; SigLIP: none).
EXTRA_VISION_TOKENS = {"clip_vision_model": 1, "siglip_vision_model": 0}


def assemble_llava(
    vision: str,
    language: str,
    output: str,
    image_token: str = "<image>",
    vision_feature_layer: int = -2,
    projector_hidden_act: str = "gelu",
    dtype: DTypeName = "float32",
    seed: int = 0,
) -> Path:
    """Write a LLaVA whose vision tower and language model carry the given weights and whose projector is new.

    Args:
        vision: A CLIP or SigLIP model or vision-model directory (or hub id) with its image processor.
        language: A causal LM directory, GGUF directory or hub id, with its tokenizer and chat template.
        output: Directory to write the model and processor to.
        image_token: Token added to the tokenizer for image positions.
        vision_feature_layer: Hidden layer of the vision encoder whose patch features feed the projector
            (LLaVA-1.5 uses the second to last).
        projector_hidden_act: Activation between the projector's two linear layers.
        dtype: Dtype of the written weights.
        seed: Seed of the projector's initialisation.
    """
    vision_config = AutoConfig.from_pretrained(vision)
    vision_config = getattr(vision_config, "vision_config", vision_config)  # a full CLIP/SigLIP: its vision half
    if vision_config.model_type not in EXTRA_VISION_TOKENS:
        raise UsageError(
            f"Unsupported vision encoder {vision_config.model_type!r} (--vision); valid: {sorted(EXTRA_VISION_TOKENS)}"
        )
    extra_tokens = EXTRA_VISION_TOKENS[vision_config.model_type]
    spec = ModelSpec(path=language, dtype=dtype)
    tokenizer = spec.load_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": [image_token]})
    language_model = spec.load_model()
    language_model.resize_token_embeddings(len(tokenizer))
    config = LlavaConfig(
        vision_config=vision_config.to_dict(),
        text_config=language_model.config.to_dict(),
        image_token_id=tokenizer.convert_tokens_to_ids(image_token),
        vision_feature_layer=vision_feature_layer,
        vision_feature_select_strategy="default" if extra_tokens else "full",
        projector_hidden_act=projector_hidden_act,
        tie_word_embeddings=language_model.config.tie_word_embeddings,
    )
    torch.manual_seed(seed)
    llava = LlavaForConditionalGeneration(config).to(torch_dtype(dtype))
    encoder = AutoModel.from_pretrained(vision, dtype=torch_dtype(dtype))
    tower = llava.model.vision_tower  # both sides' `vision_model`: the same transformer in CLIP(Vision)Model/SigLIP
    getattr(tower, "vision_model", tower).load_state_dict(getattr(encoder, "vision_model", encoder).state_dict())
    llava.model.language_model.load_state_dict(language_model.get_decoder().state_dict())
    llava.lm_head.load_state_dict(language_model.get_output_embeddings().state_dict())
    processor = LlavaProcessor(
        image_processor=AutoImageProcessor.from_pretrained(vision),
        tokenizer=tokenizer,
        patch_size=vision_config.patch_size,
        vision_feature_select_strategy=config.vision_feature_select_strategy,
        num_additional_image_tokens=extra_tokens,
        image_token=image_token,
        chat_template=tokenizer.chat_template,
    )
    directory = Path(output)
    llava.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
