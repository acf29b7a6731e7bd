"""Built-in chat templates, for tokenizers that ship none or when a recipe wants a fixed format.

The template becomes the tokenizer's own ``chat_template``, so training, export and ``lightning-ft chat`` render the
exact same string. Every template here is prefix-stable: rendering the first turns of a conversation with
``add_generation_prompt=True`` yields a prefix of rendering the whole conversation, which the label masks rely on.
"""

from lightning_ft.errors import UsageError

CHATML = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

LLAMA3 = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)

ALPACA = (
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{{ message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'user' %}{{ '### Instruction:\n' + message['content'] + '\n\n' }}"
    "{% elif message['role'] == 'assistant' %}{{ '### Response:\n' + message['content'] + eos_token + '\n\n' }}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '### Response:\n' }}{% endif %}"
)

# "Role: content" blocks with no special tokens: for encoders (reward models on BERT-style backbones) and base models.
# Assistant turns end with no end-of-turn token, so a model trained on it to generate would not learn to stop.
PLAIN = (
    "{% for message in messages %}"
    "{{ {'system': 'System', 'user': 'User', 'assistant': 'Assistant', 'tool': 'Tool'}[message['role']] + ': ' "
    "+ message['content'] + '\n\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ 'Assistant: ' }}{% endif %}"
)

BUILTIN_CHAT_TEMPLATES: dict[str, str] = {"chatml": CHATML, "llama3": LLAMA3, "alpaca": ALPACA, "plain": PLAIN}

# Tokens that end an assistant turn in the templates above; generation stops on any of them that the vocabulary has.
END_OF_TURN_TOKENS = ("<|im_end|>", "<|eot_id|>")


def resolve_chat_template(name_or_jinja: str) -> str:
    """Return the Jinja source for a built-in template name, or the argument itself when it already is Jinja."""
    if name_or_jinja in BUILTIN_CHAT_TEMPLATES:
        return BUILTIN_CHAT_TEMPLATES[name_or_jinja]
    if "{{" in name_or_jinja or "{%" in name_or_jinja:
        return name_or_jinja
    raise UsageError(
        f"Unknown chat template {name_or_jinja!r}. Use one of {sorted(BUILTIN_CHAT_TEMPLATES)}, a Jinja template "
        "string, or leave it unset to use the tokenizer's own."
    )
