"""`MultimodalData`: conversations with images (the LLaVA layout, or ``messages`` + ``images``) for vision-language
SFT, tokenized through the model's own processor.

Each ``<image>`` placeholder becomes exactly as many image tokens as the processor makes for that image (so as many as
the model's vision features), those tokens never carry loss, and a conversation whose ``max_length`` cut would fall
inside its image tokens is dropped with a count or stops the run, never cut.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import torch
from datasets import Dataset, List
from datasets import Image as ImageFeature
from PIL import Image
from transformers import ProcessorMixin

from lightning_ft.data.collate import PadCollator
from lightning_ft.data.formats import Message, chat_to_messages, field_names
from lightning_ft.data.mixing import MixSource
from lightning_ft.data.module import RawPart, RecordTokenizer
from lightning_ft.data.sft import SFTData
from lightning_ft.data.sources import DataError
from lightning_ft.data.tokenize import DROPPED, IGNORE_INDEX, ConversationTokenizer, Status
from lightning_ft.errors import UsageError
from lightning_ft.options import check_option

MultimodalFormat = Literal["llava", "messages"]
ImageOverflow = Literal["drop", "error"]
MULTIMODAL_FIELDS: dict[str, dict[str, str]] = {
    "llava": {"messages": "conversations", "role": "from", "content": "value", "system": "system", "images": "image"},
    "messages": {"messages": "messages", "role": "role", "content": "content", "system": "system", "images": "images"},
}
UNLIMITED = 1 << 62


class MultimodalData(SFTData):
    """Image + conversation records for vision-language models (`lightning_ft.algorithms.VisionLanguageSFT`).

    Args:
        format: ``llava`` (``image``: a path or a list of paths; ``conversations`` with ``from``/``value``) or
            ``messages`` (``images``: a list of paths; ``messages`` with ``role``/``content``). Image paths are
            relative to the data file's directory (or absolute); a `datasets` Image column (hub datasets, parquet)
            holds the images themselves.
        fields: Rename fields; keys: messages, role, content, system, images.
        placeholder: Where an image goes in a turn's text; their number must equal the record's images.
        image_overflow: When ``max_length`` would cut through a conversation's image tokens: ``drop`` it (counted
            and reported) or stop with an ``error`` naming the record.
        **kwargs: `SFTData` arguments (``train_on``, ``max_length``, ``overlong``, ``batch_size``, ...). The
            ``tokenizer`` is the model's processor (the CLI links it). Batches are padded (``group_by_length``
            works), not packed.
    """

    def __init__(
        self,
        train: str | list[MixSource],
        format: MultimodalFormat = "llava",
        fields: dict[str, str] | None = None,
        placeholder: str = "<image>",
        image_overflow: ImageOverflow = "drop",
        packing: bool = False,
        **kwargs: Any,
    ) -> None:
        if packing:
            raise UsageError(
                "MultimodalData batches padded conversations: packing is not supported with images; set "
                "data.packing: false"
            )
        check_option("image_overflow", image_overflow, ImageOverflow)
        super().__init__(train, packing=False, **kwargs)
        self.format = format
        self.fields = field_names(MULTIMODAL_FIELDS, format, fields)
        self.placeholder = placeholder
        self.image_overflow = image_overflow

    @property
    def processor(self) -> ProcessorMixin:
        if not isinstance(self.tokenizer, ProcessorMixin):
            raise UsageError(
                "MultimodalData tokenizes with the model's processor (AutoProcessor): train a vision-language model "
                "(lightning_ft.algorithms.VisionLanguageSFT), or pass `tokenizer=` a processor."
            )
        return self.tokenizer

    def format_options(self) -> dict[str, Any]:
        return {
            "format": self.format,
            "fields": self.fields,
            "placeholder": self.placeholder,
            "image_overflow": self.image_overflow,
            "processor": self.processor.to_dict(),  # image size, patch size, feature strategy: the image token counts
        }

    def to_conversation(
        self, record: Mapping[str, Any], where: str, root: Path
    ) -> tuple[list[Message], list[Path | Image.Image]]:
        """The record's messages and its images (paths resolved against ``root``, or images a `datasets` Image
        column decoded), checked against each other."""
        messages = self.with_system_prompt(chat_to_messages(record, self.fields, where))
        images = record_images(record, self.fields["images"], where)
        placeholders = sum(message["content"].count(self.placeholder) for message in messages)
        if placeholders != len(images):
            raise DataError(
                f"{where}: {placeholders} {self.placeholder} placeholder(s) in the conversation but {len(images)} "
                f"image(s) in field {self.fields['images']!r}"
            )
        return messages, [root / image if isinstance(image, str) else image for image in images]

    def kept_columns(self, columns: list[str]) -> list[str]:
        """The images field stays beside the tokens: a `datasets` Image column holds the images themselves."""
        return [self.fields["images"]] if self.fields["images"] in columns else []

    def _raw_parts(self) -> list[RawPart]:
        field = self.fields["images"]
        return [part._replace(records=undecoded(part.records, field)) for part in super()._raw_parts()]

    def part_tokenizer(self, part: RawPart) -> RecordTokenizer:
        """Images are found relative to each part's own file."""
        if self.kind_of(part.source) == "text":
            return self.text_record_tokenizer()
        return self.image_record_tokenizer(image_root(part.path))

    def text_record_tokenizer(self) -> RecordTokenizer:
        raise UsageError("MultimodalData cannot mix in raw-text sources (kind: text): its rows carry images")

    def record_tokenizer(self) -> RecordTokenizer:
        return self.image_record_tokenizer(image_root(self.sources[0].path))

    def image_record_tokenizer(self, root: Path) -> RecordTokenizer:
        processor = self.processor
        image_token, image_token_id = processor.image_token, processor.image_token_id
        conversations = ConversationTokenizer(processor.tokenizer, UNLIMITED, self.train_on, "truncate")

        def tokenize(record: Mapping[str, Any], where: str) -> dict[str, Any]:
            messages, paths = self.to_conversation(record, where, root)
            messages = [{**m, "content": m["content"].replace(self.placeholder, image_token)} for m in messages]
            images = [open_image(path, where) if isinstance(path, Path) else path.convert("RGB") for path in paths]
            example = conversations(messages)
            if example["status"] != "ok":
                return {**example, "image_paths": []}
            runs = [image_token_count(processor, image) for image in images]
            input_ids, labels = expand_image_tokens(example["input_ids"], example["labels"], image_token_id, runs)
            if input_ids.count(image_token_id) != sum(runs):
                raise DataError(
                    f"{where}: the tokenizer does not keep {image_token!r} as one token; add it as a special token"
                )
            input_ids, labels, status = self.fit_to_length(input_ids, labels, image_token_id, where)
            if all(label == IGNORE_INDEX for label in labels):
                status = "dropped_no_trainable"
            if status in DROPPED:
                return {"input_ids": [], "labels": [], "status": status, "image_paths": []}
            image_paths = [
                str(path) for path in paths if isinstance(path, Path)
            ]  # embedded images stay in their column
            return {"input_ids": input_ids, "labels": labels, "status": status, "image_paths": image_paths}

        return tokenize

    def fit_to_length(
        self, input_ids: list[int], labels: list[int], image_token_id: int, where: str
    ) -> tuple[list[int], list[int], Status]:
        """Keep, truncate or drop a conversation longer than ``max_length``; never cut through its image tokens."""
        if len(input_ids) <= self.max_length:
            return input_ids, labels, "ok"
        if self.overlong == "drop":
            return input_ids, labels, "dropped_too_long"
        last_image_token = max((i for i, token in enumerate(input_ids) if token == image_token_id), default=-1)
        if last_image_token < self.max_length:
            return input_ids[: self.max_length], labels[: self.max_length], "truncated"
        if self.image_overflow == "error":
            raise DataError(
                f"{where}: max_length {self.max_length} would cut through its image tokens (the conversation has "
                f"{len(input_ids)} tokens, its last image ends at token {last_image_token + 1}); raise max_length "
                "or set image_overflow: drop"
            )
        return input_ids, labels, "dropped_image_cut"

    def batch_columns(self, dataset: Dataset) -> list[str]:
        return ["input_ids", "labels", "image_paths", *self.kept_columns(dataset.column_names)]

    def collator(self) -> MultimodalCollator:
        tokenizer, image_processor = self.processor.tokenizer, self.processor.image_processor
        return MultimodalCollator(tokenizer.pad_token_id, image_processor, self.fields["images"])


class MultimodalCollator:
    """`PadCollator`'s padded ``input_ids``/``attention_mask``/``labels``, plus what the image processor makes of
    the batch's images in order (``pixel_values``, and ``image_sizes`` for processors that give it). Images come
    from their files, or from the ``images_field`` column when a `datasets` Image column holds them."""

    def __init__(self, pad_token_id: int, image_processor: Any, images_field: str) -> None:
        self.pad = PadCollator(pad_token_id)
        self.image_processor = image_processor
        self.images_field = images_field

    def __call__(self, examples: Sequence[dict]) -> dict[str, torch.Tensor]:
        batch = self.pad(examples)
        images = [image for example in examples for image in self.images_of(example)]
        if images:
            batch.update(self.image_processor(images, return_tensors="pt"))
        return batch

    def images_of(self, example: dict) -> list[Image.Image]:
        if example["image_paths"]:
            return [open_image(Path(path), f"image {path}") for path in example["image_paths"]]
        stored = as_list(example.get(self.images_field))
        return [stored_image(cell, "an image cell") for cell in stored if isinstance(cell, dict)]


def image_root(source: str) -> Path:
    """Image paths are relative to the data file's directory (a hub id: the working directory)."""
    path = Path(source)
    return path.parent if path.exists() else Path.cwd()


def undecoded(raw: Dataset, field: str) -> Dataset:
    """``raw`` with a `datasets` Image column left as its stored bytes: decoded images would be re-encoded (lossily,
    for JPEG) when the column is kept beside the tokens."""
    feature = raw.features.get(field)
    if isinstance(feature, ImageFeature):
        return raw.cast_column(field, ImageFeature(decode=False))
    if isinstance(feature, List) and isinstance(feature.feature, ImageFeature):
        return raw.cast_column(field, List(ImageFeature(decode=False)))
    return raw


def record_images(record: Mapping[str, Any], field: str, where: str) -> list[str | Image.Image]:
    """Image paths, or images stored in the data (a `datasets` Image column); not both in one record."""
    value = record.get(field)
    if value is None:
        return []
    images = [stored_image(image, where) if isinstance(image, dict) else image for image in as_list(value)]
    if not all(isinstance(image, (str, Image.Image)) for image in images):
        raise DataError(f"{where}: field {field!r} must hold image paths or images (a `datasets` Image column)")
    if len({isinstance(image, str) for image in images}) > 1:
        raise DataError(f"{where}: field {field!r} mixes image paths and embedded images")
    return images


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def stored_image(stored: dict, where: str) -> Image.Image:
    """A `datasets` Image cell (``{"bytes", "path"}``), decoded."""
    if stored.get("bytes"):
        with Image.open(io.BytesIO(stored["bytes"])) as image:
            return image.convert("RGB")
    if stored.get("path"):
        return open_image(Path(stored["path"]), where)
    raise DataError(f"{where}: an image cell holds neither bytes nor a path")


def open_image(path: Path, where: str) -> Image.Image:
    if not path.is_file():
        raise DataError(f"{where}: image file {path} not found")
    try:
        with Image.open(path) as image:
            return image.convert("RGB")
    except OSError as error:
        raise DataError(f"{where}: cannot read image {path}: {error}") from error


def image_token_count(processor: ProcessorMixin, image: Image.Image) -> int:
    """How many image tokens the processor puts in place of one placeholder for ``image`` (the number of feature
    vectors the model's vision tower and projector give it; fixed for LLaVA-1.5, size-dependent for others)."""
    encoded = processor(text=processor.image_token, images=[image])
    return sum(1 for token in encoded["input_ids"][0] if token == processor.image_token_id)


def expand_image_tokens(
    input_ids: list[int], labels: list[int], image_token_id: int, runs: list[int]
) -> tuple[list[int], list[int]]:
    """Replace the ``k``-th image token by ``runs[k]`` of them; image tokens never carry loss."""
    expanded_ids: list[int] = []
    expanded_labels: list[int] = []
    images = iter(runs)
    for token, label in zip(input_ids, labels, strict=True):
        if token == image_token_id:
            count = next(images, 1)
            expanded_ids += [token] * count
            expanded_labels += [IGNORE_INDEX] * count
        else:
            expanded_ids.append(token)
            expanded_labels.append(label)
    return expanded_ids, expanded_labels
