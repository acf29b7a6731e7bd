"""README as written: the "Extend it" example runs and what it defines works (a data module from a custom record
format, a custom loss that SFT trains with), and CI runs README's test command after ruff."""

from __future__ import annotations

import math
import re
from types import SimpleNamespace

import pytest
import torch
from transformers import LlamaForCausalLM

from lightning_ft.algorithms import SFT
from lightning_ft.data import SFTData
from lightning_ft.model.spec import ModelSpec
from tests.conftest import ROOT
from tests.helpers import LossRecorder, adamw, quiet_trainer, write_jsonl

README = (ROOT / "README.md").read_text()
CI_SCRIPT = (ROOT / ".ci" / "run").read_text()


def section(heading: str) -> str:
    """The text under ``## heading`` up to the next ``## `` heading."""
    match = re.search(rf"^## {re.escape(heading)}\n(.*?)(?=^## |\Z)", README, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README has no '## {heading}' section"
    return match.group(1)


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


@pytest.fixture(scope="module")
def extend_it() -> SimpleNamespace:
    """What the "Extend it" python block defines, run as README shows it."""
    (code,) = code_blocks(section("Extend it"), "python")
    namespace: dict = {"__name__": "readme_extend_it"}
    exec(compile(code, "README.md (Extend it)", "exec"), namespace)
    return SimpleNamespace(**namespace)


def test_the_data_module_tokenizes_records_of_its_own_format(extend_it, tiny_tokenizer, tmp_path):
    assert issubclass(extend_it.MyData, SFTData)
    records = [{"q": "What is the capital of France?", "a": "Paris."}, {"q": "Say hello.", "a": "hello world"}]
    data = extend_it.MyData(
        str(write_jsonl(tmp_path / "qa.jsonl", records)), tokenizer=tiny_tokenizer, packing=False, max_length=64
    )
    data.prepare_data()
    data.setup("fit")
    assert data.stats["train"] == {"records": 2, "ok": 2}
    for record, example in zip(records, data.datasets["train"], strict=True):
        messages = [{"role": "user", "content": record["q"]}, {"role": "assistant", "content": record["a"]}]
        assert tiny_tokenizer.decode(example["input_ids"]) == tiny_tokenizer.apply_chat_template(
            messages, tokenize=False
        )
        trained = [token for token, label in zip(example["input_ids"], example["labels"], strict=True) if label != -100]
        assert trained == [token for token in example["labels"] if token != -100]  # labels are the tokens themselves
        assert tiny_tokenizer.decode(trained) == f"{record['a']}<|im_end|>"  # the answer and its end of turn


def test_the_loss_against_values_by_hand(extend_it):
    """Identity projection, so the hidden states are the logits. Position 0 ([0, 0]) predicts token 1 with p = 1/2:
    (1 - 1/2)² · ln 2; position 1 ([ln 3, 0]) predicts token 0 with p = 3/4: (1/4)² · ln(4/3); position 2 predicts
    nothing (the last position) and the first label is masked anyway."""
    hidden = torch.tensor([[[0.0, 0.0], [math.log(3), 0.0], [5.0, -5.0]]])
    projection = torch.nn.Linear(2, 2, bias=False)
    torch.nn.init.eye_(projection.weight)
    loss_sum, num_tokens = extend_it.focal_cross_entropy(hidden, projection, torch.tensor([[-100, 1, 0]]))
    assert int(num_tokens) == 2
    assert float(loss_sum) == pytest.approx(0.25 * math.log(2) + math.log(4 / 3) / 16, rel=1e-6)
    # gamma = 0 is plain cross-entropy: ln 2 + ln(4/3)
    plain, _ = extend_it.focal_cross_entropy(hidden, projection, torch.tensor([[-100, 1, 0]]), gamma=0.0)
    assert float(plain) == pytest.approx(math.log(2) + math.log(4 / 3), rel=1e-6)


def test_sft_trains_with_the_loss(extend_it, tiny_model_dir, tmp_path):
    """The first step's logged loss is the example's loss of the untrained model per trained token; training lowers
    it."""
    assert extend_it.SFT is SFT
    records = [{"q": "What is the capital of France?", "a": "The capital of France is Paris."}] * 4
    module = SFT(
        ModelSpec(path=str(tiny_model_dir)),
        loss_fn=extend_it.focal_cross_entropy,
        optimizer=adamw(1e-2),
        lr_scheduler="constant",
    )
    data = extend_it.MyData(
        str(write_jsonl(tmp_path / "qa.jsonl", records)),
        tokenizer=module.tokenizer,
        packing=False,
        batch_size=len(records),
        max_length=64,
    )
    recorder = LossRecorder()
    quiet_trainer(max_steps=8, callbacks=[recorder], num_sanity_val_steps=0).fit(module, datamodule=data)
    batch = next(iter(data.train_dataloader()))
    model = LlamaForCausalLM.from_pretrained(tiny_model_dir)
    with torch.no_grad():
        hidden = model.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
        loss_sum, num_tokens = extend_it.focal_cross_entropy(hidden, model.lm_head, batch["labels"])
    assert recorder.losses[0] == pytest.approx(float(loss_sum / num_tokens), rel=1e-5)
    assert recorder.losses[-1] < 0.5 * recorder.losses[0], recorder.losses


def test_ci_lints_then_runs_the_readme_test_command():
    """.ci/run (bash, stopping at the first error) runs ruff's lint and format check, then README's test command as
    README writes it."""
    (command,) = [block.strip() for block in code_blocks(section("Set-up"), "bash") if "pytest" in block]
    lines = [line for line in CI_SCRIPT.splitlines() if line.strip() and not line.startswith("#")]
    assert "set -euo pipefail" in lines
    assert lines[-1] == command
    assert lines.index("ruff check .") < lines.index("ruff format --check .") < len(lines) - 1
