"""The commands besides `fit` and `validate` (export, chat, score, eval, serve, merge, assemble-llava, data, tune):
functions whose signatures are their options (jsonargparse's `auto_cli`). They import what they need when they run,
so a command loads torch and transformers but never Lightning unless it trains or reads training data."""

from __future__ import annotations

import importlib
import inspect
import json
import os
import sys
import types
import typing
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, NoReturn

from jsonargparse import ArgumentParser, auto_cli

from lightning_ft import launcher
from lightning_ft.errors import UsageError, debugging
from lightning_ft.model.gguf_weights import GgufType
from lightning_ft.model.spec import DTypeName
from lightning_ft.parser_errors import reduce_parser_error


class OneLineErrors(ArgumentParser):
    """A usage error as one line on stderr (the failing key and the reason) and exit status 2, instead of the whole
    usage and jsonargparse's nested message; all of it with ``--debug``."""

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        hint = self.hint(message)
        if not self.exit_on_error or debugging():
            super().error(message + (f"\n{hint}" if hint else ""), ex)
        program = self.prog.replace(" [options]", "")
        reason = reduce_parser_error(message) + (f"; {hint}" if hint else "")
        print(f"{program}: error: {reason} (options: {program} --help)", file=sys.stderr)
        raise SystemExit(2)

    def hint(self, message: str) -> str:
        """What to add to the error ``message`` (e.g. the valid values); nothing by default."""
        return ""


def export(adapter: str, output: str, dtype: DTypeName = "float32", gguf: GgufType | None = None) -> None:
    """Merge an adapter export into its base model and write a standalone Hugging Face model, or with ``--gguf TYPE``
    one GGUF file for llama.cpp and Ollama (chat template and stop tokens included).

    Args:
        adapter: An export directory written during training (``.../hf/final``); with ``--gguf``, also a full export
            or any Hugging Face model directory.
        output: Where to write the merged model and tokenizer; with ``--gguf``, a ``.gguf`` file path or a directory
            that receives ``model-<TYPE>.gguf``.
        dtype: Dtype of the written weights (with ``--gguf``: the dtype adapters are merged in).
        gguf: Write one GGUF file of this tensor type instead: f32, f16, bf16 or q8_0 (norms stay f32).
            Architectures: llama, mistral, qwen2.
    """
    if gguf is not None:
        from lightning_ft.model.gguf_export import export_gguf

        print(f"GGUF model written to {export_gguf(adapter, output, gguf_type=gguf, dtype=dtype)}")
        return
    from lightning_ft.model.export import merge_export

    path = merge_export(adapter, output, dtype=dtype)
    print(f"Merged model written to {path}")


def chat(
    model: str,
    prompt: str | None = None,
    system: str | None = None,
    image: str | None = None,
    max_new_tokens: int | None = None,
    temperature: float | None = None,
    top_p: float | None = None,
    top_k: int | None = None,
    repetition_penalty: float | None = None,
    seed: int | None = None,
    dtype: DTypeName = "float32",
) -> None:
    """Answer prompts with a fine-tuned model, rendered with the chat template it was trained with.

    A sampling option not given takes the value recorded in the model's generation_config.json (an export's:
    ``--export.generation`` of the fit), else greedy decoding of up to 256 tokens.

    Args:
        model: An export directory (adapter or full model) or any Hugging Face model directory.
        prompt: A prompt to answer; without one, an interactive chat reads stdin.
        system: System message.
        image: An image file the first turn is about (vision-language exports); ``<image>`` in the prompt marks
            where it goes, else it comes first.
        max_new_tokens: Longest reply (default: as recorded in generation_config.json, else 256).
        temperature: 0 decodes greedily; above 0 samples (default: as recorded, else 0).
        top_p: Sample within the smallest set of most likely tokens whose probability reaches it, in (0, 1]
            (default: as recorded, else 1: every token).
        top_k: Sample within the k most likely tokens; 0 keeps every token (default: as recorded, else 0).
        repetition_penalty: Penalty (> 0) on tokens already in the chat; 1 applies none (default: as recorded, else 1).
        seed: Seeds the sampling, so the same seed gives the same replies (default: not seeded).
        dtype: Dtype to load the weights in.
    """
    explicit = {
        "max_new_tokens": max_new_tokens,
        "temperature": temperature,
        "top_p": top_p,
        "top_k": top_k,
        "repetition_penalty": repetition_penalty,
        "seed": seed,
    }
    from lightning_ft.model.export import load_export
    from lightning_ft.model.generation import Conversation, chat_loop
    from lightning_ft.model.heads import unwrap
    from lightning_ft.model.sampling import check_sampling_values, sampling_options

    check_sampling_values(explicit)  # before loading the model
    network, tokenizer = load_export(model, dtype=dtype)
    sampling = sampling_options(unwrap(network).generation_config, **explicit)
    images = [_image(image)] if image else []
    conversation = Conversation(network, tokenizer, system, images, sampling)
    if prompt:
        print(conversation.ask(prompt))
    else:
        chat_loop(conversation)


def optional_module(name: str, extra: str) -> types.ModuleType:
    """Imports a module that needs an optional extra, or stops with the command that installs it."""
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as error:
        if error.name is None or error.name.startswith("lightning_ft"):
            raise
        raise SystemExit(
            f"lightning-ft {extra} needs the `{extra}` extra ({error.name} is not installed): "
            f'pip install "lightning-ft[{extra}]"'
        ) from error


def merge(
    config_file: str,
    output: str,
    dtype: DTypeName | None = None,
    base_tokenizer: str | None = None,
    materialize: bool = False,
    adapter_combination: str | None = None,
    seed: int | None = None,
    device: str = "cpu",
) -> None:
    """Merge models with MergeKit: `lightning-ft merge CONFIG.yaml OUTPUT_DIR`.

    CONFIG is a MergeKit YAML (linear, slerp, task_arithmetic, ties, dare_ties, ...); a ``model:`` may also be a
    lightning-ft adapter export or a GGUF directory. When every model is a LoRA export of one base and the method maps
    onto peft, the adapters merge as adapters (the output is an adapter export); otherwise full models merge.

    Args:
        config_file: A MergeKit YAML file.
        output: The directory to write (replaced only once the merge is complete).
        dtype: Dtype of the written weights (default: the YAML's out_dtype/dtype, else the base's).
        base_tokenizer: The model whose tokenizer, chat template and generation config the output gets (default:
            base_model, else the first model).
        materialize: Merge full models even when every model is an adapter export of one base.
        adapter_combination: peft combination_type for the adapter path (cat, linear, svd, ties, dare_ties, ...)
            instead of the method's counterpart.
        seed: Seed for the random methods (DARE).
        device: Where MergeKit computes: cpu, cuda or auto.
    """
    merging = optional_module("lightning_ft.merge", extra="merge")
    try:
        options = {"materialize": materialize, "adapter_combination": adapter_combination, "seed": seed}
        report = merging.merge_models(config_file, output, dtype, base_tokenizer, device=device, **options)
    except (merging.MergeConfigError, merging.MergeSourceError) as error:
        raise SystemExit(f"lightning-ft merge: {error}") from error
    print(f"Merged model ({report.method}, {report.path} path) written to {report.output}")


def serve(
    model: str,
    adapter: list[str] | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    api_key_env: str = "LIGHTNING_FT_API_KEY",
    max_batch_size: int = 8,
    batch_timeout: float = 0.05,
    dtype: DTypeName = "float32",
) -> None:
    """Serve a model and its LoRA adapters with an OpenAI-compatible API (/v1/chat/completions, /v1/completions,
    /v1/models) until Ctrl-C. Prompts are rendered with each export's chat template; options a request leaves unset
    take the values its generation_config.json records.

    Args:
        model: An export directory (full, or adapter: then served with its base), a Hugging Face model directory, a
            GGUF directory or a hub id; requests name it as given (an adapter export's base by its recorded path).
        adapter: ``NAME=EXPORT_DIR``: a LoRA adapter export of the same base, served as model NAME (repeatable).
        host: Address to bind: 127.0.0.1 (this machine only), 0.0.0.0 or ::.
        port: Port to listen on.
        api_key_env: Environment variable holding the API key; when it is set, requests must send
            ``Authorization: Bearer <key>``.
        max_batch_size: Most requests generated together.
        batch_timeout: Seconds to wait for a batch to fill.
        dtype: Dtype to load the weights in.
    """
    pairs = [item.partition("=") for item in adapter or []]
    if any(not name or not directory for name, _, directory in pairs):
        raise UsageError(f"--adapter takes NAME=EXPORT_DIR, got {adapter}")
    server = optional_module("lightning_ft.serve.server", extra="serve")
    config = server.ServeConfig(
        model=model,
        adapters={name: directory for name, _, directory in pairs},
        host=host,
        port=port,
        api_key=os.environ.get(api_key_env) or None,
        max_batch_size=max_batch_size,
        batch_timeout=batch_timeout,
        dtype=dtype,
    )
    server.run_server(config)


class LazyCommands(Mapping[str, Callable[..., Any]]):
    """Command name -> function, each imported when it is looked up (``"module:function"``)."""

    def __init__(self, targets: dict[str, str | Callable[..., Any]]) -> None:
        self.targets = targets

    def __getitem__(self, name: str) -> Callable[..., Any]:
        target = self.targets[name]
        if callable(target):
            return target
        module, _, function = target.partition(":")
        return getattr(importlib.import_module(module), function)

    def __iter__(self) -> Iterator[str]:
        return iter(self.targets)

    def __len__(self) -> int:
        return len(self.targets)


DATA_COMMANDS = LazyCommands(
    {
        "stats": "lightning_ft.prep.stats:stats",
        "clean": "lightning_ft.prep.clean:clean",
        "split": "lightning_ft.prep.split:split",
        "leak-check": "lightning_ft.prep.leak:leak_check",
        "convert": "lightning_ft.prep.convert:convert",
        "generate": "lightning_ft.prep.generate:generate",
        "augment": "lightning_ft.prep.augment:augment",
    }
)


def data_overview() -> str:
    """``lightning-ft data --help``: each tool with the first line of its docstring."""
    width = max(map(len, DATA_COMMANDS))
    lines = [f"usage: {launcher.PROGRAM} data COMMAND [options]", "", "commands:"]
    for name, function in DATA_COMMANDS.items():
        summary = " ".join((inspect.getdoc(function) or "").split("\n\n")[0].replace("``", "").split())
        lines.append(f"  {name:<{width}}  {summary}")
    return "\n".join([*lines, "", "Each command has --help."])


def data_arguments(function: Callable[..., Any], argv: list[str]) -> list[str]:
    """`command_arguments` for a `lightning-ft data` command, whose required parameters are positional: given in
    order, or by name as a flag (``convert IN OUT --to messages``); a list parameter among them takes every
    remaining positional value (``leak-check TRAIN EVAL [EVAL ...]``)."""
    if any(argument in ("--help", "-h") for argument in argv):
        return ["--help"]
    parameters = inspect.signature(function).parameters.values()
    required = [parameter.name for parameter in parameters if parameter.default is parameter.empty]
    hints = typing.get_type_hints(function)
    named: dict[str, str] = {}
    flags, values, position = [], [], 0
    while position < len(argv):
        argument = argv[position]
        if argument.startswith("--"):
            name, _, inline = argument[2:].replace("-", "_").partition("=")
            value = inline if "=" in argument else (argv[position + 1] if position + 1 < len(argv) else "")
            if name in required:
                named[name] = value
            else:
                flags += [argument] if "=" in argument else [argument, value]
            position += 1 if "=" in argument else 2
        else:
            values.append(argument)
            position += 1
    arguments = []
    for name in required:
        if name in named:
            arguments.append(named[name])
        elif list in {typing.get_origin(hints.get(name)), *map(_origin, _members(hints.get(name)))}:
            arguments.append(json.dumps(values))
            values = []
        elif values:
            arguments.append(values.pop(0))
    if values:
        raise SystemExit(f"lightning-ft data: unexpected arguments {values}")
    return arguments + command_arguments(function, flags)


def run_data_command(argv: list[str]) -> Any:
    """``lightning-ft data COMMAND ...``: the data tools."""
    if argv and argv[0] in launcher.HELP_FLAGS:
        print(data_overview())
        return None
    if not argv or argv[0] not in DATA_COMMANDS:
        given = f"unknown command {argv[0]!r}; " if argv and not argv[0].startswith("-") else ""
        launcher.fail(f"lightning-ft data: error: {given}commands: {', '.join(DATA_COMMANDS)} (each has --help)", 2)
    command = DATA_COMMANDS[argv[0]]
    arguments, program = data_arguments(command, argv[1:]), f"{launcher.PROGRAM} data {argv[0]}"
    return auto_cli(command, args=arguments, as_positional=True, parser_class=OneLineErrors, prog=program)


EXTRA_COMMANDS = LazyCommands(
    {
        "export": export,
        "chat": chat,
        "generate": chat,
        "score": "lightning_ft.eval.reward:score_pairs",
        "assemble-llava": "lightning_ft.model.llava:assemble_llava",
        "eval": "lightning_ft.eval.evaluate:evaluate",
        "serve": serve,
        "merge": merge,
    }
)


def command_arguments(function: Callable[..., Any], argv: list[str]) -> list[str]:
    """Flags as users type them: ``--max-new-tokens`` is ``--max_new_tokens``, and a list option may be repeated
    (``--data a.jsonl --data b.jsonl``, jsonargparse's ``--data+``) or given as a list (``--data [a,b]``); values
    before the first flag are the required parameters in order (``merge CONFIG OUTPUT``)."""
    argv = _leading_positionals_as_flags(function, argv)
    hints = typing.get_type_hints(function)
    lists = {name for name, hint in hints.items() if list in {typing.get_origin(hint), *map(_origin, _members(hint))}}
    arguments = []
    for position, argument in enumerate(argv):
        if argument.startswith("--") and "=" not in argument:
            argument = "--" + argument[2:].replace("-", "_")
            following = argv[position + 1] if position + 1 < len(argv) else ""
            if argument[2:] in lists and not following.startswith("["):
                argument += "+"
        arguments.append(argument)
    return arguments


def _leading_positionals_as_flags(function: Callable[..., Any], argv: list[str]) -> list[str]:
    parameters = inspect.signature(function).parameters.values()
    required = [parameter.name for parameter in parameters if parameter.default is parameter.empty]
    count = next((index for index, argument in enumerate(argv) if argument.startswith("-")), len(argv))
    if count > len(required):
        return argv  # the parser reports the unexpected values
    named = zip(required, argv[:count], strict=False)
    return [item for name, value in named for item in (f"--{name}", value)] + argv[count:]


def _members(hint: Any) -> tuple[Any, ...]:
    return typing.get_args(hint) if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union else ()


def _origin(hint: Any) -> Any:
    return typing.get_origin(hint)


def _image(path: str) -> Any:
    from lightning_ft.data.multimodal import open_image  # the data package imports Lightning

    return open_image(Path(path), "--image")


def run(argv: list[str]) -> None:
    """``lightning-ft COMMAND ...`` for every command but `fit` and `validate`; results as one JSON line."""
    if argv[0] == "tune":
        optional_module("lightning_ft.tune.command", extra="tune").main(argv[1:])
        return
    if argv[0] == "data":
        result = run_data_command(argv[1:])
        if result is not None:
            print(json.dumps({key: value for key, value in result.items() if not isinstance(value, list | dict)}))
        return
    if argv[0] not in EXTRA_COMMANDS:
        commands = ", ".join(launcher.COMMANDS)
        raise SystemExit(f"{launcher.PROGRAM}: error: unknown command {argv[0]!r}; commands: {commands}")
    command = EXTRA_COMMANDS[argv[0]]
    arguments = command_arguments(command, argv[1:])
    program = f"{launcher.PROGRAM} {argv[0]}"
    result = auto_cli(command, args=arguments, as_positional=False, parser_class=OneLineErrors, prog=program)
    if result is not None:
        print(json.dumps(result, default=str))
