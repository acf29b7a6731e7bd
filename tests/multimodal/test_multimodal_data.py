"""`MultimodalData` on the real demo images: image tokens match the vision features one for one, label masks are
exact at token level, and bad records are named."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

from lightning_ft.algorithms.vlm import VisionLanguageSFT
from lightning_ft.data import DataError, MultimodalData
from lightning_ft.model.spec import ModelSpec

KANE = [
    {"role": "user", "content": "<image>Who are they?"},
    {"role": "assistant", "content": "They're Kane and Gretzka from Bayern Munich."},
    {"role": "user", "content": "What are they doing?<image>"},
    {"role": "assistant", "content": "They are celebrating on the soccer field."},
]


@pytest.fixture(scope="module")
def llava(tiny_llava_dir) -> VisionLanguageSFT:
    module = VisionLanguageSFT(ModelSpec(path=str(tiny_llava_dir)))
    module.configure_model()
    return module


def write_records(directory, records, name="data.jsonl") -> str:
    path = directory / name
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    return str(path)


def data_in(tmp_path, demo_dir, records, processor, **options) -> MultimodalData:
    """``records`` in a file beside a copy of the demo images (paths relative to the file), tokenized."""
    shutil.copytree(demo_dir / "mllm_demo_data", tmp_path / "mllm_demo_data", dirs_exist_ok=True)
    options = {"format": "messages", "batch_size": len(records), "max_length": 512, **options}
    data = MultimodalData(write_records(tmp_path, records), tokenizer=processor, **options)
    data.prepare_data()
    data.setup("fit")
    return data


def error_dir(tmp_path):
    (tmp_path / "error").mkdir(exist_ok=True)
    return tmp_path / "error"


def first_batch(data: MultimodalData) -> dict[str, torch.Tensor]:
    return next(iter(data._sft_loader(data.datasets["train"], len(data.datasets["train"]), shuffle=False)))


@pytest.mark.parametrize(
    ("images", "expected_tokens"), [(["mllm_demo_data/2.jpg"], 16), (["mllm_demo_data/1.jpg"] * 2, 32)]
)
def test_image_tokens_equal_the_vision_feature_vectors(llava, tmp_path, demo_dir, images, expected_tokens):
    messages = [dict(m) for m in KANE]
    if len(images) == 1:
        messages[2]["content"] = "What are they doing?"
    batch = first_batch(data_in(tmp_path, demo_dir, [{"messages": messages, "images": images}], llava.processor))
    image_tokens = int((batch["input_ids"] == llava.processor.image_token_id).sum())
    with torch.no_grad():
        features = llava.model.model.get_image_features(pixel_values=batch["pixel_values"]).pooler_output
    assert batch["pixel_values"].shape[0] == len(images)
    assert image_tokens == sum(feature.shape[0] for feature in features) == expected_tokens
    with torch.no_grad():  # the model itself agrees (it raises when image tokens and features differ)
        assert torch.isfinite(llava.loss_sum(batch)[0])


def test_labels_cover_assistant_turns_only(llava, tmp_path, demo_dir):
    images = ["mllm_demo_data/1.jpg"] * 2
    batch = first_batch(data_in(tmp_path, demo_dir, [{"messages": KANE, "images": images}], llava.processor))
    input_ids, labels = batch["input_ids"][0], batch["labels"][0]
    trained = labels != -100
    assert torch.equal(labels[trained], input_ids[trained])
    assert not trained[input_ids == llava.processor.image_token_id].any()
    # Runs of trained tokens, decoded: exactly the two assistant replies, each through its end-of-turn token.
    runs, run = [], []
    for token, is_trained in zip(input_ids.tolist(), trained.tolist(), strict=True):
        if is_trained:
            run.append(token)
        elif run:
            runs.append(run)
            run = []
    runs += [run] if run else []
    decoded = [llava.tokenizer.decode(run) for run in runs]
    assert decoded == [f"{KANE[1]['content']}<|im_end|>", f"{KANE[3]['content']}<|im_end|>"]
    # Everything else (system, user turns with their images, turn headers) carries no loss.
    untrained_text = llava.tokenizer.decode(input_ids[~trained])
    assert "Who are they?" in untrained_text and "Bayern" not in untrained_text


def test_llava_layout_reads_image_paths_relative_to_the_file(llava, demo_dir):
    data = MultimodalData(
        str(demo_dir / "mllm_demo_llava.jsonl"), fields={"images": "images"}, tokenizer=llava.processor, batch_size=6
    )
    data.prepare_data()
    data.setup("fit")
    assert data.stats["train"] == {"records": 6, "ok": 6}
    batch = first_batch(data)
    assert batch["pixel_values"].shape[0] == 8  # records 0 and 3 have two images
    assert int((batch["input_ids"] == llava.processor.image_token_id).sum()) == 8 * 16


def test_placeholder_count_must_match_the_images(llava, demo_dir):
    """The reshaped demo file's ``image`` field holds one path where the conversation has two placeholders."""
    data = MultimodalData(str(demo_dir / "mllm_demo_llava.jsonl"), tokenizer=llava.processor)
    with pytest.raises(DataError, match=r"mllm_demo_llava\.jsonl:1: 2 <image> placeholder\(s\) .* but 1 image"):
        data.prepare_data()


def test_a_missing_image_names_the_record_and_path(llava, tmp_path, demo_dir):
    records = [{"messages": KANE, "images": ["mllm_demo_data/1.jpg"] * 2}, {"messages": KANE, "images": ["no.jpg"] * 2}]
    with pytest.raises(DataError, match=r"data\.jsonl:2: image file .*no\.jpg not found"):
        data_in(tmp_path, demo_dir, records, llava.processor)


def test_truncation_never_cuts_image_tokens(llava, tmp_path, demo_dir):
    """At 60 tokens the two-image conversation would lose part of its second image: dropped and counted. The
    one-image conversation is cut after its image: truncated, with all 16 image tokens kept."""
    short = [dict(m) for m in KANE[:2]]
    records = [
        {"messages": KANE, "images": ["mllm_demo_data/1.jpg"] * 2},
        {"messages": short, "images": ["mllm_demo_data/1.jpg"]},
    ]
    data = data_in(tmp_path, demo_dir, records, llava.processor, max_length=60)
    assert data.stats["train"] == {"records": 2, "truncated": 1, "dropped_image_cut": 1}
    assert data.dropped["train"] == {"dropped_image_cut": [0]}
    batch = first_batch(data)
    assert batch["input_ids"].shape == (1, 60)
    assert int((batch["input_ids"] == llava.processor.image_token_id).sum()) == 16
    with pytest.raises(DataError, match=r"data\.jsonl:1: max_length 60 would cut through its image tokens"):
        data_in(error_dir(tmp_path), demo_dir, records, llava.processor, max_length=60, image_overflow="error")


def test_text_data_modules_need_a_processor(tiny_model_dir, tmp_path):
    from lightning_ft.algorithms import SFT

    module = SFT(ModelSpec(path=str(tiny_model_dir)))
    path = write_records(tmp_path, [{"messages": KANE[:2], "images": ["x.jpg"]}])
    with pytest.raises(ValueError, match="MultimodalData tokenizes with the model's processor"):
        MultimodalData(path, format="messages", tokenizer=module.tokenizer).prepare_data()


def test_length_grouped_batches_carry_their_images(llava, demo_dir):
    data = MultimodalData(
        str(demo_dir / "mllm_demo.jsonl"),
        format="messages",
        group_by_length=True,
        tokenizer=llava.processor,
        batch_size=3,
    )
    data.prepare_data()
    data.setup("fit")
    batches = list(data.train_dataloader())
    assert len(batches) == 2
    images = [int((b["input_ids"] == llava.processor.image_token_id).sum()) // 16 for b in batches]
    assert images == [b["pixel_values"].shape[0] for b in batches] and sum(images) == 8


def test_images_embedded_in_a_datasets_image_column(llava, tmp_path, demo_dir):
    """A parquet file (as hub datasets are) whose ``images`` column holds the photos' bytes: same tokens and pixels as
    the same conversations with image paths."""
    from datasets import Dataset, Image, Sequence

    records = [json.loads(line) for line in (demo_dir / "mllm_demo.jsonl").read_text().splitlines()][:3]
    embedded = [
        {**r, "images": [{"bytes": (demo_dir / p).read_bytes(), "path": None} for p in r["images"]]} for r in records
    ]
    parquet = tmp_path / "embedded.parquet"
    Dataset.from_list(embedded).cast_column("images", Sequence(Image())).to_parquet(parquet)
    options = {"format": "messages", "tokenizer": llava.processor, "batch_size": 3}
    from_bytes = MultimodalData(str(parquet), **options)
    from_paths = MultimodalData(str(demo_dir / "mllm_demo.jsonl"), **options)
    batches = []
    for data in (from_bytes, from_paths):
        data.prepare_data()
        data.setup("fit")
        batches.append(next(iter(data._sft_loader(data.datasets["train"].select(range(3)), 3, shuffle=False))))
    assert batches[0].keys() == batches[1].keys()
    for name in batches[0]:
        assert torch.equal(batches[0][name], batches[1][name]), name
    assert batches[0]["pixel_values"].shape[0] == 4
