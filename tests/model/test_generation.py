"""A conversation with a model: each reply is the greedy continuation of the whole history rendered with the chat
template, the history keeps every turn, the first turn carries the images, and the interactive loop ends on an
empty line or the end of input."""

from __future__ import annotations

from lightning_ft.model.generation import Conversation, chat_loop
from lightning_ft.model.sampling import SamplingOptions
from lightning_ft.model.spec import ModelSpec
from tests.helpers import greedy_reply


def test_each_reply_continues_the_whole_history(tiny_model_dir):
    spec = ModelSpec(path=str(tiny_model_dir))
    model, tokenizer = spec.load_model().eval(), spec.load_tokenizer()
    conversation = Conversation(model, tokenizer, system="Answer briefly.", sampling=SamplingOptions(max_new_tokens=6))
    first = conversation.ask("Say hello.")
    expected = [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": "Say hello."}]
    assert first == greedy_reply(model, tokenizer, expected, 6)
    second = conversation.ask("Again.")
    expected += [{"role": "assistant", "content": first}, {"role": "user", "content": "Again."}]
    assert second == greedy_reply(model, tokenizer, expected, 6)
    assert conversation.messages == [*expected, {"role": "assistant", "content": second}]


def test_the_first_turn_carries_the_images():
    conversation = Conversation(model=None, tokenizer=None, images=["photo-a", "photo-b"])
    assert conversation._with_images("What is this?") == "<image><image>What is this?"
    assert conversation._with_images("Compare <image> with <image>.") == "Compare <image> with <image>."


def test_the_loop_answers_each_line_until_an_empty_one_or_the_end(tiny_model_dir):
    class Echo(Conversation):
        def ask(self, text: str) -> str:
            return text.upper()

    written: list[str] = []
    lines = iter(["hi", "there", "", "never read"])
    chat_loop(Echo(None, None), read=lambda prompt: next(lines), write=written.append)
    assert written[1:] == ["assistant: HI", "assistant: THERE"]
    assert next(lines) == "never read"

    def end_of_input(prompt: str) -> str:
        raise EOFError

    written.clear()
    chat_loop(Echo(None, None), read=end_of_input, write=written.append)
    assert len(written) == 1  # the greeting only


def test_stop_tokens_are_eos_and_the_end_of_turn_tokens_the_vocabulary_has(tiny_tokenizer):
    from lightning_ft.model.generation import stop_token_ids

    im_end = tiny_tokenizer.get_vocab()["<|im_end|>"]
    assert stop_token_ids(tiny_tokenizer) == [im_end]  # eos is <|im_end|>; <|eot_id|> is not in the vocabulary
    endoftext = tiny_tokenizer.get_vocab()["<|endoftext|>"]
    plain = tiny_tokenizer.__class__(tokenizer_object=tiny_tokenizer.backend_tokenizer, eos_token="<|endoftext|>")
    assert stop_token_ids(plain) == sorted([endoftext, im_end])
