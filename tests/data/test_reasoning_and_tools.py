"""Reasoning models' templates (Qwen3's, which drops earlier turns' thinking), reasoning content, tool calling and
``{% generation %}`` markers: every assistant turn is trained exactly as the whole conversation's rendering shows it,
and nothing else is."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from transformers import AutoTokenizer

from lightning_ft.data import ChatData, DataError, PreferenceData
from lightning_ft.data.formats import CHAT_FIELDS, chat_to_messages, record_tools
from lightning_ft.data.tokenize import IGNORE_INDEX, ConversationTokenizer
from lightning_ft.model.chat_templates import CHATML
from tests.conftest import build_tiny_tokenizer, shared_data
from tests.data.qwen3_template import QWEN3_CHAT_TEMPLATE
from tests.helpers import write_jsonl

THINKING = ["The capital of France is a fact I know.", "One kilometre is 1000 metres.", "They thank me."]
CHAT = [
    {"role": "system", "content": "Answer briefly."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "The capital of France is Paris.", "reasoning_content": THINKING[0]},
    {"role": "user", "content": "Convert 3 kilometres to metres."},
    {"role": "assistant", "content": "3000 metres.", "reasoning_content": THINKING[1]},
    {"role": "user", "content": "Thank you!"},
    {"role": "assistant", "content": "Goodbye!", "reasoning_content": THINKING[2]},
]
PLAIN_CHAT = [{"role": m["role"], "content": m["content"]} for m in CHAT]
# As Qwen3's template renders the whole chat: the thinking only in the turn after the last user message.
QWEN3_TURNS = [
    "The capital of France is Paris.<|im_end|>",
    "3000 metres.<|im_end|>",
    f"<think>\n{THINKING[2]}\n</think>\n\nGoodbye!<|im_end|>",
]
WEATHER_TOOL = {
    "name": "get_weather",
    "description": "The weather in a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


@pytest.fixture(autouse=True)
def private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_DATASETS_CACHE", str(tmp_path / "cache"))


@pytest.fixture(scope="module")
def smollm2_qwen3(smollm2_dir: Path):  # noqa: ANN201
    """The real SmolLM2 tokenizer (ChatML special tokens) with Qwen3's published template installed."""
    tokenizer = AutoTokenizer.from_pretrained(smollm2_dir, gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf")
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def tiny_qwen3():  # noqa: ANN201
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = QWEN3_CHAT_TEMPLATE
    return tokenizer


def trained_pieces(tokenizer, input_ids: list[int], labels: list[int]) -> list[str]:  # noqa: ANN001
    """The decoded runs of consecutive trained tokens."""
    pieces, run = [], []
    for token, label in [*zip(input_ids, labels, strict=True), (None, IGNORE_INDEX)]:
        if label != IGNORE_INDEX:
            assert label == token
            run.append(token)
        elif run:
            pieces.append(tokenizer.decode(run))
            run = []
    return pieces


def prepared(data):  # noqa: ANN001, ANN201
    data.prepare_data()
    data.setup("fit")
    return data


# Reasoning ---------------------------------------------------------------------------------------------------------


def test_qwen3_three_turns_are_trained_as_the_whole_rendering_shows_them(smollm2_qwen3) -> None:  # noqa: ANN001
    example = ConversationTokenizer(smollm2_qwen3, max_length=1024)(CHAT)
    assert example["input_ids"] == smollm2_qwen3.apply_chat_template(CHAT, tokenize=True, return_dict=True)["input_ids"]
    assert trained_pieces(smollm2_qwen3, example["input_ids"], example["labels"]) == QWEN3_TURNS


def test_train_on_reasoning_false_removes_exactly_the_thinking_tokens(smollm2_qwen3) -> None:  # noqa: ANN001
    with_thinking = ConversationTokenizer(smollm2_qwen3, max_length=1024)(CHAT)
    without = ConversationTokenizer(smollm2_qwen3, max_length=1024, train_on_reasoning=False)(CHAT)
    assert without["input_ids"] == with_thinking["input_ids"]
    removed = [
        token
        for token, kept, dropped in zip(
            with_thinking["input_ids"], with_thinking["labels"], without["labels"], strict=True
        )
        if kept != IGNORE_INDEX and dropped == IGNORE_INDEX
    ]
    assert smollm2_qwen3.decode(removed) == THINKING[2]  # only the last turn's thinking is rendered, hence trained
    pairs = zip(with_thinking["labels"], without["labels"], strict=True)
    assert all(dropped in (kept, IGNORE_INDEX) for kept, dropped in pairs)
    pieces = trained_pieces(smollm2_qwen3, without["input_ids"], without["labels"])
    assert pieces == QWEN3_TURNS[:2] + ["<think>\n", "\n</think>\n\nGoodbye!<|im_end|>"]


def test_think_tags_inside_the_content_are_the_same_reasoning() -> None:
    tokenizer = tiny_qwen3()
    inline = [
        {"role": m["role"], "content": f"<think>\n{m['reasoning_content']}\n</think>\n\n{m['content']}"}
        if "reasoning_content" in m
        else m
        for m in CHAT
    ]
    for train_on_reasoning in (True, False):
        conversations = ConversationTokenizer(tokenizer, max_length=1024, train_on_reasoning=train_on_reasoning)
        assert conversations(inline) == conversations(CHAT)


def test_think_tags_in_a_template_without_reasoning_are_found_in_the_content() -> None:
    """ChatML renders the content as it is: the text between the tags is the reasoning."""
    tokenizer = build_tiny_tokenizer()
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "<think>hello</think>world"}]
    example = ConversationTokenizer(tokenizer, max_length=128, train_on_reasoning=False)(messages)
    assert trained_pieces(tokenizer, example["input_ids"], example["labels"]) == ["<think>", "</think>world<|im_end|>"]


def test_reasoning_a_template_never_renders_is_refused_not_dropped() -> None:
    with pytest.raises(DataError, match="assistant turn 1 .'The capital of France is Paris.'.: the turn has reasoning"):
        ConversationTokenizer(build_tiny_tokenizer(), max_length=512)(CHAT)


def test_template_arguments_from_the_data_config_are_written_into_the_template(tmp_path: Path) -> None:
    """``enable_thinking: false`` puts Qwen3's empty think block in the prompt, so the last turn trains its answer
    without it; the saved tokenizer renders that way with no arguments, and an explicit argument still wins."""
    tokenizer = tiny_qwen3()
    records = [{"messages": PLAIN_CHAT}]
    data = ChatData(
        str(write_jsonl(tmp_path / "chat.jsonl", records)),
        tokenizer=tokenizer,
        chat_template_kwargs={"enable_thinking": False},
        packing=False,
    )
    row = prepared(data).datasets["train"][0]
    assert trained_pieces(tokenizer, row["input_ids"], row["labels"]) == QWEN3_TURNS[:2] + ["Goodbye!<|im_end|>"]
    tokenizer.save_pretrained(tmp_path / "export")
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "export")
    prompt = [{"role": "user", "content": "Hi"}]
    assert reloaded.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True).endswith(
        "<|im_start|>assistant\n<think>\n\n</think>\n\n"
    )
    thinking = reloaded.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    assert thinking.endswith("<|im_start|>assistant\n")
    before = tokenizer.chat_template
    data._require_tokenizer()
    assert tokenizer.chat_template == before  # written once, however often it is asked for


# Tool calling ------------------------------------------------------------------------------------------------------


def glaive_records(name: str) -> list[dict]:
    return [json.loads(line) for line in shared_data(f"chat/{name}").read_text().splitlines()]


def expected_glaive_turns(record: dict) -> list[str]:
    """Each assistant turn as Qwen3's template renders it: a call as a <tool_call> block of its name and arguments
    (``tojson``: no ASCII escapes), a reply as its text; the turn after the last user message (the last one here)
    opens with an empty think block; each ends with <|im_end|>."""
    turns = record["conversations"]
    expected = []
    for position, turn in enumerate(turns):
        if turn["from"] == "function_call":
            call = json.loads(turn["value"])
            arguments = json.dumps(call["arguments"], ensure_ascii=False)
            body = f'<tool_call>\n{{"name": "{call["name"]}", "arguments": {arguments}}}\n</tool_call>'
        elif turn["from"] == "gpt":
            body = turn["value"]
        else:
            continue
        think = "<think>\n\n</think>\n\n" if position == len(turns) - 1 else ""
        expected.append(think + body + "<|im_end|>")
    return expected


def test_a_glaive_record_trains_its_calls_and_replies_and_nothing_else(smollm2_qwen3) -> None:  # noqa: ANN001
    record = glaive_records("glaive_toolcall_en_demo.jsonl")[0]
    assert [turn["from"] for turn in record["conversations"]][3:5] == ["function_call", "observation"]
    messages = chat_to_messages(record, CHAT_FIELDS["sharegpt"], "record 0")
    tools = record_tools(record, "tools", "record 0")
    example = ConversationTokenizer(smollm2_qwen3, max_length=4096)(messages, tools)
    rendered = smollm2_qwen3.apply_chat_template(messages, tools=tools, tokenize=False)
    assert "<tools>\n" + json.dumps({"type": "function", "function": json.loads(record["tools"])[0]}) in rendered
    assert "<tool_response>\n" + record["conversations"][4]["value"] + "\n</tool_response>" in rendered
    assert trained_pieces(smollm2_qwen3, example["input_ids"], example["labels"]) == expected_glaive_turns(record)


@pytest.mark.parametrize("name", ["glaive_toolcall_en_demo.jsonl", "glaive_toolcall_zh_demo.jsonl"])
def test_every_glaive_record_converts_and_trains_only_assistant_turns(name: str, tmp_path: Path) -> None:
    tokenizer = tiny_qwen3()
    records = glaive_records(name)
    data = prepared(ChatData(str(shared_data(f"chat/{name}")), format="sharegpt", tokenizer=tokenizer, max_length=8192))
    assert data.stats["train"] == {"records": len(records), "ok": len(records)}
    for row in data.datasets["train"].select(range(0, len(records), 25)):
        expected = expected_glaive_turns(records[row["record"]])
        assert trained_pieces(tokenizer, row["input_ids"], row["labels"]) == expected


def test_openai_style_tool_calls_and_tool_messages() -> None:
    tokenizer = tiny_qwen3()
    call = {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'}}
    record = {
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "content": "sunny", "tool_call_id": "call_1", "name": "get_weather"},
            {"role": "assistant", "content": "It is sunny."},
        ],
        "tools": [{"type": "function", "function": WEATHER_TOOL}],
    }
    messages = chat_to_messages(record, CHAT_FIELDS["messages"], "record 0")
    assert messages[1] == {
        "role": "assistant",
        "content": "",
        "tool_calls": [
            {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}, "id": "call_1"}
        ],
    }
    assert messages[2] == {"role": "tool", "content": "sunny", "name": "get_weather", "tool_call_id": "call_1"}
    example = ConversationTokenizer(tokenizer, max_length=2048)(messages, record_tools(record, "tools", "record 0"))
    assert trained_pieces(tokenizer, example["input_ids"], example["labels"]) == [
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>',
        "<think>\n\n</think>\n\nIt is sunny.<|im_end|>",
    ]


@pytest.mark.parametrize(
    ("turn", "message"),
    [
        ({"from": "function_call", "value": "{not json"}, "turn 1: field 'value' is not valid JSON"),
        ({"from": "function_call", "value": '{"arguments": {}}'}, "call 0: a tool call needs a 'name'"),
        ({"from": "human", "value": "x", "tool_calls": [{"name": "f"}]}, "'tool_calls' belongs to assistant turns"),
    ],
)
def test_bad_tool_calls_name_the_record_turn_and_field(turn: dict, message: str) -> None:
    record = {"conversations": [{"from": "human", "value": "Hi"}, turn, {"from": "gpt", "value": "ok"}]}
    with pytest.raises(DataError, match=message):
        chat_to_messages(record, CHAT_FIELDS["sharegpt"], "f.jsonl: record 7")


def test_calls_and_tools_a_template_never_renders_are_refused() -> None:
    tokenizer = build_tiny_tokenizer()  # ChatML: no tools, no tool calls
    calls = [{"type": "function", "function": {"name": "f", "arguments": {}}}]
    messages = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "", "tool_calls": calls}]
    with pytest.raises(DataError, match="assistant turn 1 .*: the turn calls tools, but the chat template never"):
        ConversationTokenizer(tokenizer, max_length=64)(messages)
    with pytest.raises(DataError, match="the record has tools, but the chat template never renders them"):
        ConversationTokenizer(tokenizer, max_length=64)(messages[:1] + [{"role": "assistant", "content": "x"}], [{}])


# Templates with generation markers, and templates that hide a turn --------------------------------------------------

MARKED_CHATML = (  # ChatML with each assistant turn's text and end of turn inside {% generation %}
    "{% for message in messages %}{% if message['role'] == 'assistant' %}"
    "{{ '<|im_start|>assistant\n' }}{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{ '\n' }}{% else %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@pytest.mark.parametrize("train_on", ["assistant", "last_assistant"])
def test_generation_markers_give_transformers_assistant_masks(train_on: str) -> None:
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = MARKED_CHATML
    assert "{% generation %}" in tokenizer.chat_template
    messages = PLAIN_CHAT
    example = ConversationTokenizer(tokenizer, max_length=512, train_on=train_on)(messages)
    reference = tokenizer.apply_chat_template(messages, return_dict=True, return_assistant_tokens_mask=True)
    assert example["input_ids"] == reference["input_ids"]
    mask = [label != IGNORE_INDEX for label in example["labels"]]
    marked = [bool(flag) for flag in reference["assistant_masks"]]
    if train_on == "last_assistant":
        last_start = max(i for i in range(1, len(marked)) if marked[i] and not marked[i - 1])
        marked = [flag and i >= last_start for i, flag in enumerate(marked)]
    assert mask == marked
    assert trained_pieces(tokenizer, example["input_ids"], example["labels"])[-1] == "Goodbye!<|im_end|>"


def test_a_template_that_hides_an_assistant_turn_names_the_record_and_turn(tmp_path: Path) -> None:
    tokenizer = build_tiny_tokenizer()
    tokenizer.chat_template = CHATML.replace(
        "{% for message in messages %}", "{% for message in messages if message['role'] != 'assistant' or loop.last %}"
    ).replace("loop.last", "message is sameas messages[-1]")
    records = [{"messages": PLAIN_CHAT[1:3]}, {"messages": PLAIN_CHAT}]
    data = ChatData(str(write_jsonl(tmp_path / "chat.jsonl", records)), tokenizer=tokenizer)
    with pytest.raises(
        DataError,
        match=r"chat\.jsonl:2, assistant turn 1 \('The capital of France is Paris.'\): the chat template does "
        "not render this turn",
    ):
        prepared(data)


# Packing and DPO with both kinds of records -----------------------------------------------------------------------


def test_packed_rows_keep_the_masks_of_reasoning_and_tool_call_records(tmp_path: Path) -> None:
    tokenizer = tiny_qwen3()
    glaive = glaive_records("glaive_toolcall_en_demo.jsonl")[:3]
    reasoning = {
        "conversations": [
            {"from": "human", "value": "Hi"},
            {"from": "gpt", "value": "Hello!", "reasoning_content": "A greeting."},
        ]
    }
    path = write_jsonl(tmp_path / "mixed.jsonl", [*glaive, reasoning])
    unpacked = prepared(ChatData(str(path), format="sharegpt", tokenizer=tokenizer, packing=False, max_length=4096))
    packed = prepared(
        ChatData(str(path), format="sharegpt", tokenizer=tokenizer, packing=True, max_length=4096, batch_size=4)
    )
    by_record = {row["record"]: row for row in unpacked.datasets["train"]}
    expected = [expected_glaive_turns(record) for record in glaive] + [
        ["<think>\nA greeting.\n</think>\n\nHello!<|im_end|>"]
    ]
    for number, row in by_record.items():
        assert trained_pieces(tokenizer, row["input_ids"], row["labels"]) == expected[number]
    packed_pieces = []
    for batch in packed.train_dataloader():
        rows = zip(batch["input_ids"], batch["labels"], batch["sequence_ids"], batch["attention_mask"], strict=True)
        for ids, labels, sequences, attention in rows:
            for sequence in sequences[attention.bool()].unique().tolist():  # trailing padding is not a sequence
                chosen = sequences == sequence
                packed_pieces.append(trained_pieces(tokenizer, ids[chosen].tolist(), labels[chosen].tolist()))
    assert sorted(map(tuple, packed_pieces)) == sorted(map(tuple, expected))


def test_dpo_pairs_whose_responses_are_tool_calls_or_reasoning(tmp_path: Path) -> None:
    tokenizer = tiny_qwen3()
    call = lambda city: {"name": "get_weather", "arguments": {"city": city}}  # noqa: E731
    records = [
        {
            "prompt": [{"role": "user", "content": "Weather in Paris?"}],
            "chosen": [{"role": "assistant", "content": "", "tool_calls": [call("Paris")]}],
            "rejected": [{"role": "assistant", "content": "", "tool_calls": [call("Rome")]}],
            "tools": json.dumps([WEATHER_TOOL]),
        },
        {
            "prompt": "What is 2 + 2?",
            "chosen": {"role": "assistant", "content": "4", "reasoning_content": "Two and two make four."},
            "rejected": {"role": "assistant", "content": "5", "reasoning_content": "A guess."},
        },
    ]
    path = write_jsonl(tmp_path / "pairs.jsonl", records)
    data = prepared(PreferenceData(str(path), tokenizer=tokenizer, batch_size=2, max_length=1024))
    batch = next(iter(data.predict_dataloader()))
    assert batch["record"].tolist() == [0, 1]
    rows = zip(batch["input_ids"], batch["labels"], batch["attention_mask"].bool(), strict=True)
    responses = [trained_pieces(tokenizer, ids[mask].tolist(), labels[mask].tolist()) for ids, labels, mask in rows]
    calls = [  # the response is the turn after the last user message: Qwen3 opens it with a think block, empty here
        "<think>\n\n</think>\n\n"
        f'<tool_call>\n{{"name": "get_weather", "arguments": {{"city": "{city}"}}}}\n</tool_call><|im_end|>'
        for city in ("Paris", "Rome")
    ]
    thoughts = [
        "<think>\nTwo and two make four.\n</think>\n\n4<|im_end|>",
        "<think>\nA guess.\n</think>\n\n5<|im_end|>",
    ]
    assert responses == [[calls[0]], [thoughts[0]], [calls[1]], [thoughts[1]]]  # chosen rows, then rejected rows


def test_dpo_trains_on_tool_call_and_reasoning_pairs(tiny_model_dir: Path, tmp_path: Path) -> None:
    from lightning_ft.algorithms import DPO
    from lightning_ft.model.spec import ModelSpec
    from tests.helpers import adamw, dpo_lora, dpo_trainer

    module = DPO(
        ModelSpec(path=str(tiny_model_dir), chat_template=QWEN3_CHAT_TEMPLATE),
        peft=dpo_lora(),
        optimizer=adamw(2e-2),
        lr_scheduler="constant",
    )
    call = lambda city: {"name": "get_weather", "arguments": {"city": city}}  # noqa: E731
    records = [
        {
            "prompt": f"Weather in {city}?",
            "chosen": {"role": "assistant", "content": "", "tool_calls": [call(city)], "reasoning_content": "Ask."},
            "rejected": {"role": "assistant", "content": "It is sunny.", "reasoning_content": "Guess."},
            "tools": [WEATHER_TOOL],
        }
        for city in ("Paris", "Rome", "Oslo", "Lima")
    ]
    train = str(write_jsonl(tmp_path / "pairs.jsonl", records))
    data = PreferenceData(train, val=train, tokenizer=module.tokenizer, batch_size=4, max_length=1024)
    trainer = dpo_trainer(steps=15)
    before = trainer.validate(module, datamodule=data, verbose=False)[0]
    trainer.fit(module, datamodule=data)
    after = trainer.validate(module, datamodule=data, verbose=False)[0]
    assert before["val/rewards/accuracy"] == 0.0  # the reference is the model: no pair is won before training
    assert after["val/rewards/accuracy"] == 1.0 and after["val/loss"] < before["val/loss"]
