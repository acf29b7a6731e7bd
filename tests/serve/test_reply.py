"""`ReplyText`: streamed deltas concatenate to the final reply, which is cut before the first stop string and
stripped for chat turns; token counts include the token that ended the reply."""

from __future__ import annotations

from lightning_ft.model.sampling import SamplingOptions
from lightning_ft.serve.jobs import GenerationJob
from lightning_ft.serve.reply import ReplyText

TEXT = "  The capital of France is Paris. Thank you, goodbye!"


def replay(tokenizer, stop: tuple[str, ...], strip: bool, max_new_tokens: int = 200) -> tuple[list[str], ReplyText]:  # noqa: ANN001
    job = GenerationJob("m", (1, 2, 3), SamplingOptions(max_new_tokens=max_new_tokens), stop, strip)
    reply = ReplyText(job, tokenizer, (tokenizer.eos_token_id,))
    deltas = []
    for token in [*tokenizer(TEXT, add_special_tokens=False)["input_ids"], tokenizer.eos_token_id]:
        update = reply.add(token)
        deltas.append(update.content)
        if update.finish_reason:
            assert (update.prompt_tokens, update.completion_tokens) == (3, reply.completion_tokens)
            break
    return deltas, reply


def test_a_stop_string_cuts_before_itself(tiny_tokenizer):
    deltas, reply = replay(tiny_tokenizer, ("Paris", "goodbye"), strip=True)
    assert "".join(deltas) == reply.text() == "The capital of France is"
    assert reply.finish_reason == "stop"
    assert "P" not in "".join(deltas)  # the start of a stop string is held back, never sent


def test_without_stops_the_end_of_turn_token_ends_the_stripped_reply(tiny_tokenizer):
    deltas, reply = replay(tiny_tokenizer, (), strip=True)
    assert "".join(deltas) == TEXT.strip()
    assert reply.finish_reason == "stop"
    assert reply.completion_tokens == len(tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"]) + 1


def test_a_completion_keeps_its_whitespace_and_stops_at_max_tokens(tiny_tokenizer):
    deltas, reply = replay(tiny_tokenizer, (), strip=False, max_new_tokens=4)
    expected = tiny_tokenizer.decode(tiny_tokenizer(TEXT, add_special_tokens=False)["input_ids"][:4])
    assert "".join(deltas) == expected
    assert (reply.finish_reason, reply.completion_tokens) == ("length", 4)
