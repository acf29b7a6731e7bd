"""What a user reads when they get an option, a combination of options, a name or a record wrong: a `UsageError`
(exit status 2) or a `DataError` (exit status 1) whose message says the cause first, names the option as the command
line spells it (``model.warmup_steps``, ``data.packing``, ``--judge_url``) and what to do; through the command line,
one line ``lightning-ft COMMAND: error: CAUSE`` instead of a traceback."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from peft import LoraConfig

from lightning_ft import launcher
from lightning_ft.algorithms import EWC, GRPO
from lightning_ft.callbacks import GenerationEval
from lightning_ft.callbacks.tracking import optuna_trial
from lightning_ft.data import InstructionData, PreferenceData, TextData
from lightning_ft.data.mixing import WeightedMixSampler
from lightning_ft.data.multimodal import MultimodalData
from lightning_ft.data.template_defaults import with_template_defaults
from lightning_ft.errors import DataError, MissingFileError, UnsupportedError, UsageError
from lightning_ft.eval.choice import choice_scores
from lightning_ft.eval.items import EvalItem, items_from_records
from lightning_ft.model.chat_templates import resolve_chat_template
from lightning_ft.model.fingerprint import weights_fingerprint
from lightning_ft.model.freeze import FreezePolicy
from lightning_ft.model.generation_defaults import GenerationDefaults
from lightning_ft.model.gguf_export import check_gguf_type
from lightning_ft.model.spec import ModelSpec
from lightning_ft.model.trainable import build_trainable_model
from lightning_ft.rewards.loading import load_reward_function
from tests.test_launcher import error_of, fit, records

REWARD = "lightning_ft.rewards.answer_in_tags"


def message_of(error: pytest.ExceptionInfo) -> str:
    """The message as the command line prints it: one line."""
    return launcher.one_line(error.value)


# Through the command line: the exit status and the one line the user reads


def test_both_warmup_options_are_one_line(tiny_model_dir, tmp_path, capsys):
    """configs/sft/lora.yaml sets warmup_ratio; adding warmup_steps asks for two warmups at once."""
    arguments = fit(
        ["--data.train", str(records(tmp_path / "train.jsonl")), "--model.warmup_steps", "5"], tiny_model_dir, tmp_path
    )
    assert error_of(arguments, capsys) == (
        2,
        "lightning-ft fit: error: model.warmup_steps and model.warmup_ratio are both set: set warmup_steps or "
        "warmup_ratio, not both",
    )
    assert not (tmp_path / "run").exists()


def test_group_by_length_with_packing_is_one_line(tiny_model_dir, tmp_path, capsys):
    """SFT data packs by default; grouping padded rows by length needs packing off."""
    arguments = fit(
        ["--data.train", str(records(tmp_path / "train.jsonl")), "--data.group_by_length", "true"],
        tiny_model_dir,
        tmp_path,
    )
    assert error_of(arguments, capsys) == (
        2,
        "lightning-ft fit: error: group_by_length batches padded conversations: it needs packing: false (packed rows "
        "have no padding); set data.packing: false or data.group_by_length: false",
    )


def test_a_local_judge_and_an_endpoint_judge_together_are_one_line(tiny_model_dir, tmp_path, capsys):
    qa = tmp_path / "qa.jsonl"
    qa.write_text(json.dumps({"question": "What is 2 + 2?", "answer": "4"}) + "\n")
    arguments = ["eval", "--model", str(tiny_model_dir), "--data", str(qa), "--judge", str(tiny_model_dir)]
    assert error_of([*arguments, "--judge_url", "http://127.0.0.1:9/v1"], capsys) == (
        2,
        "lightning-ft eval: error: Give either --judge (a local model) or --judge_url (an endpoint), not both",
    )


def test_an_adapter_without_its_name_is_one_line(capsys):
    assert error_of(["serve", "--model", "base", "--adapter", "/x/a"], capsys) == (
        2,
        "lightning-ft serve: error: --adapter takes NAME=EXPORT_DIR, got ['/x/a']",
    )


def test_split_fractions_over_one_are_one_line(tmp_path, capsys):
    """val 0.6 + test 0.5 = 1.1 leaves no training records: refused before the file is read."""
    arguments = ["data", "split", str(tmp_path / "absent.jsonl"), str(tmp_path / "out"), "--val", "0.6"]
    assert error_of([*arguments, "--test", "0.5"], capsys) == (
        2,
        "lightning-ft data: error: val and test must each be in [0, 1) with val + test < 1, got val=0.6, test=0.5",
    )


# algorithms


def test_a_negative_ewc_strength_names_the_option():
    with pytest.raises(UsageError) as error:
        EWC(replay=None, strength=-1.0)
    assert message_of(error) == "model.ewc.strength must be 0 or more, got -1.0"


def test_grpo_options_name_the_option(tiny_model_dir):
    spec = ModelSpec(path=str(tiny_model_dir))
    with pytest.raises(UsageError) as error:
        GRPO(spec, reward_funcs=[REWARD], num_generations=1)
    assert message_of(error) == "model.num_generations must be at least 2 (a group to compare with), got 1"
    with pytest.raises(UsageError) as error:
        GRPO(spec, reward_funcs=[REWARD], temperature=0.0)
    assert message_of(error) == "model.temperature must be above 0 (training samples from the policy), got 0.0"


# callbacks


def test_generation_eval_options_name_the_option():
    with pytest.raises(UsageError) as error:
        GenerationEval(num_samples=0)
    assert message_of(error) == "GenerationEval num_samples must be at least 1, got 0"


def test_generation_eval_refuses_a_vision_language_module_as_a_usage_and_type_error():
    vision = SimpleNamespace(processor=object())
    with pytest.raises(UnsupportedError) as error:
        GenerationEval(data="val.jsonl").setup(SimpleNamespace(datamodule=None), vision, "fit")
    assert isinstance(error.value, UsageError) and isinstance(error.value, TypeError)
    assert message_of(error) == (
        "GenerationEval generates text only; SimpleNamespace is a vision-language module: remove GenerationEval from "
        "trainer.callbacks"
    )


def test_a_malformed_trial_variable_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("LIGHTNING_FT_TRIAL", "3")
    with pytest.raises(UsageError, match='^LIGHTNING_FT_TRIAL must be a JSON object with "study" and "number"'):
        optuna_trial()


# data


def test_a_mix_source_left_without_rows_is_named_by_its_place_in_data_train():
    """Items 0 and 1 come from source 0, item 2 from source 2: source 1 has nothing to draw."""
    with pytest.raises(UsageError) as error:
        WeightedMixSampler([0, 0, 2], [1.0, 1.0, 1.0])
    assert message_of(error) == (
        "data.train[1]: no training rows to draw (every record was dropped, or held out for validation): fix the "
        "source's records or remove it from the mix"
    )


def test_data_option_combinations_name_the_options():
    cases = [
        (
            lambda: InstructionData("unused.jsonl", val_extra={"val": "general.jsonl"}),
            "data.val_extra: 'val' would log as 'val_val/...'; the main set is `val`: choose another name",
        ),
        (
            lambda: MultimodalData("unused.jsonl", packing=True),
            "MultimodalData batches padded conversations: packing is not supported with images; set data.packing: "
            "false",
        ),
        (
            lambda: PreferenceData("unused.jsonl", format="kto", margin_field="margin"),
            "data.margin_field applies to pairs; the kto format has none: leave it unset",
        ),
        (
            lambda: TextData("unused.jsonl", streaming=True, val_fraction=0.1),
            "data.streaming reads the corpus once per epoch: give a data.val file instead of data.val_fraction",
        ),
        (
            lambda: with_template_defaults("{{ messages }}", {"enable thinking": False}),
            "data.chat_template_kwargs: 'enable thinking' is not a valid template variable name (letters, digits, _)",
        ),
    ]
    for build, message in cases:
        with pytest.raises(UsageError) as error:
            build()
        assert message_of(error) == message


# eval


def test_a_choice_item_without_an_answer_is_a_data_error_at_its_line():
    item = EvalItem("q1", [{"role": "user", "content": "2 + 2?"}], choices=["4", "5"], source="qa.jsonl:3")
    with pytest.raises(DataError) as error:
        choice_scores([item], [[-1.0, -2.0]])
    assert message_of(error) == "qa.jsonl:3: item 'q1' has choices but no answer to score against (field 'answer')"
    assert error.value.exit_status == 1


def test_fields_without_a_format_is_a_usage_error():
    with pytest.raises(UsageError) as error:
        items_from_records([], [], fields={"question": "prompt"})
    assert message_of(error) == "`fields` rename the fields of one format: name the format too"


def test_a_missing_harness_folder_is_a_usage_error_and_still_file_not_found(tmp_path):
    harness = pytest.importorskip("lightning_ft.eval.harness")
    pytest.importorskip("lm_eval")
    absent = tmp_path / "absent"
    with pytest.raises(MissingFileError) as error:
        harness.find_tasks(["my_task"], include_path=str(absent))
    assert isinstance(error.value, FileNotFoundError) and isinstance(error.value, UsageError)
    assert message_of(error) == (
        f"include_path {absent} is not a folder of task YAML files (--harness_include: a folder of lm-eval task YAMLs)"
    )


# model


def test_model_options_name_the_option(tiny_model_dir):
    with pytest.raises(UsageError) as error:
        FreezePolicy()
    assert message_of(error) == (
        "FreezePolicy trains nothing: set model.freeze.trainable_layers > 0 and/or model.freeze.trainable_modules."
    )
    with pytest.raises(UsageError) as error:
        build_trainable_model(ModelSpec(path=str(tiny_model_dir)), LoraConfig(), FreezePolicy(trainable_layers=1))
    assert message_of(error) == (
        "Set either an adapter (model.peft) or a freeze policy (model.freeze), not both: an adapter already freezes "
        "the base."
    )
    with pytest.raises(UsageError) as error:
        GenerationDefaults(top_p=0.9)
    assert message_of(error) == (
        "top_p=0.9 and top_k=0 only apply when sampling: set a temperature above 0 (0 records greedy decoding)"
    )


def test_unknown_names_are_usage_errors():
    with pytest.raises(UsageError, match=r"^Unknown chat template 'vicuna'\. Use one of \['alpaca', 'chatml'"):
        resolve_chat_template("vicuna")
    with pytest.raises(UsageError) as error:
        check_gguf_type("q4_k")
    assert message_of(error) == "Unsupported GGUF type 'q4_k' (--gguf); supported: f32, f16, bf16, q8_0."


def test_a_model_folder_without_weights_is_a_usage_error_and_still_file_not_found(tmp_path):
    empty = tmp_path / "model"
    empty.mkdir()
    with pytest.raises(MissingFileError) as error:
        weights_fingerprint(ModelSpec(path=str(empty)))
    assert isinstance(error.value, FileNotFoundError)
    assert message_of(error) == f"No weight files under {empty} to fingerprint for {empty}"


# rewards, tune


def test_reward_function_names_are_checked():
    with pytest.raises(UsageError) as error:
        load_reward_function("answer_in_tags")
    assert message_of(error) == "Reward function 'answer_in_tags' is not an import path like 'package.module.function'"
    with pytest.raises(UnsupportedError) as error:
        load_reward_function("math.pi")
    assert isinstance(error.value, TypeError)
    assert message_of(error) == "Reward function 'math.pi' is a float, not a callable"


def test_a_storage_without_a_scheme_is_a_usage_error():
    storage = pytest.importorskip("lightning_ft.tune.storage")
    with pytest.raises(UsageError) as error:
        storage.open_storage("study.db")
    assert message_of(error) == "--storage 'study.db': give an Optuna RDB URL (sqlite:///study.db) or journal:PATH"


def test_every_user_error_kind_keeps_its_exit_status():
    assert (UsageError.exit_status, UnsupportedError.exit_status, MissingFileError.exit_status) == (2, 2, 2)
    assert DataError.exit_status == 1
    assert launcher.user_error(MissingFileError("x")) is not None
