"""lm-evaluation-harness on a model already in memory: a base model, a full export or an adapter export that stays
unmerged (a ``peft.PeftModel`` goes to lm-eval's ``HFLM`` as it is), on lm-eval's tasks or tasks of your own in YAML.

lm-eval is an optional dependency (``pip install 'lightning-ft[eval]'``), imported only when a run starts.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib.metadata
import json
import math
import numbers
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from torch import nn
from transformers import PreTrainedTokenizerBase

from lightning_ft.errors import MissingFileError, UsageError

LM_EVAL_MISSING = "lm-evaluation-harness is not installed; install it with: pip install 'lightning-ft[eval]'"
OFFLINE_VARIABLES = ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")


def run_harness(
    model: nn.Module,
    tokenizer: PreTrainedTokenizerBase,
    tasks: list[str],
    include_path: str | None = None,
    limit: int | None = None,
    batch_size: int = 8,
    num_fewshot: int | None = None,
    apply_chat_template: bool = False,
    seed: int = 0,
    log_samples: bool = False,
    offline: bool = True,
) -> dict[str, Any]:
    """Run lm-eval's ``simple_evaluate`` on ``model`` and return its metrics as plain JSON.

    Args:
        model: A causal LM in memory (`lightning_ft.model.export.load_export`); a ``peft.PeftModel`` is evaluated with
            its adapter applied, unmerged. Left in the train/eval mode it came in.
        tokenizer: Its tokenizer (lm-eval gives it a pad token when it has none).
        tasks: lm-eval task, group or tag names, or paths of task YAML files.
        include_path: A folder of task YAML files (tasks of your own, e.g. over a local JSONL with
            ``dataset_path: json``); its tasks override built-in ones of the same name.
        limit: Evaluate only the first ``limit`` documents of each task.
        batch_size: Requests per forward pass.
        num_fewshot: Few-shot examples per prompt; ``None`` keeps each task's own setting (0 when it has none).
        apply_chat_template: Render prompts with the tokenizer's chat template (multiple-choice options then follow
            the generation prompt with no delimiter, lm-eval's rule).
        seed: Seed for Python, NumPy, torch and the few-shot sampler.
        log_samples: Also return every document with its requests and responses (large).
        offline: Keep the Hugging Face Hub off during the run: built-in tasks then need their datasets cached.

    Returns:
        ``{"results": {task: {metric: value, metric_stderr: value}}, "num_samples": {task: n},
        "num_fewshot": {task: n}, "versions": {task: version}, "configs": [task names], "lm_eval_version": str}``
        (+ ``"samples": {task: [...]}`` with ``log_samples``). Metrics of a filter other than ``none`` keep lm-eval's
        ``metric,filter`` key; a stderr lm-eval could not compute is ``None``.
    """
    lm_eval = import_lm_eval()
    from lm_eval.models.huggingface import HFLM

    was_training = model.training
    try:
        with offline_hub(offline):
            task_manager = find_tasks(tasks, include_path)
            language_model = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            output = lm_eval.simple_evaluate(
                model=language_model,
                tasks=list(tasks),
                task_manager=task_manager,
                limit=limit,
                num_fewshot=num_fewshot,
                apply_chat_template=apply_chat_template,
                log_samples=log_samples,
                random_seed=seed,
                numpy_random_seed=seed,
                torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
    finally:
        model.train(was_training)
    if output is None:
        raise RuntimeError("lm-eval returned no results: run_harness runs in a single process (rank 0)")
    return harness_summary(output, log_samples)


def import_lm_eval() -> ModuleType:
    """``lm_eval``, or an ImportError that says how to install it."""
    try:
        import lm_eval
    except ImportError as error:
        raise ImportError(LM_EVAL_MISSING) from error
    return lm_eval


def find_tasks(tasks: Sequence[str], include_path: str | None = None) -> Any:
    """An lm-eval ``TaskManager`` that knows every name in ``tasks``, else a ValueError naming the unknown ones.

    When every name is a task of ``include_path`` only that folder is indexed (lm-eval's own ~15,000 task entries
    take seconds to index); groups and other names index lm-eval's tasks too.
    """
    import_lm_eval()
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise UsageError("no tasks to run: name at least one lm-eval task (or a task of include_path)")
    if include_path is not None:
        if not Path(include_path).is_dir():
            raise MissingFileError(
                f"include_path {include_path} is not a folder of task YAML files (--harness_include: a folder of "
                "lm-eval task YAMLs)"
            )
        local = TaskManager(include_path=include_path, include_defaults=False)
        if all(name in local.all_subtasks for name in tasks):
            return local
    manager = TaskManager(include_path=include_path)
    unknown = [name for name in tasks if name not in manager.all_tasks and not Path(name).is_file()]
    if unknown:
        raise UsageError(unknown_tasks_message(unknown, manager.all_tasks, include_path))
    return manager


def unknown_tasks_message(unknown: Sequence[str], known: Sequence[str], include_path: str | None) -> str:
    """Which task names lm-eval does not know, the closest known ones, and where tasks of your own go."""
    lines = []
    for name in unknown:
        close = difflib.get_close_matches(name, known, n=3)
        lines.append(f"lm-eval has no task {name!r}" + (f" (did you mean {', '.join(close)}?)" if close else ""))
    if include_path is None:
        lines.append(
            "For tasks of your own, pass include_path: a folder of lm-eval task YAML files (a local JSONL works as "
            "`dataset_path: json` with `dataset_kwargs: {data_files: {test: path}}`)."
        )
    else:
        lines.append(f"Searched lm-eval's built-in tasks and the task YAML files under {include_path}.")
    return "\n".join(lines)


@contextlib.contextmanager
def offline_hub(enabled: bool = True) -> Iterator[None]:
    """Keep the Hugging Face Hub off inside the block (the environment and both libraries' flags), then restore."""
    if not enabled:
        yield
        return
    import datasets.config
    import huggingface_hub.constants

    # huggingface_hub and datasets read the variables once, at import: their module flags must change too.
    flags = [
        (huggingface_hub.constants, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ]
    saved_flags = [getattr(module, name) for module, name in flags]
    saved_environment = {name: os.environ.get(name) for name in OFFLINE_VARIABLES}
    try:
        os.environ.update(dict.fromkeys(OFFLINE_VARIABLES, "1"))
        for module, name in flags:
            setattr(module, name, True)
        yield
    finally:
        for (module, name), value in zip(flags, saved_flags, strict=True):
            setattr(module, name, value)
        for name, value in saved_environment.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def harness_summary(output: dict[str, Any], log_samples: bool = False) -> dict[str, Any]:
    """The JSON-ready part of ``simple_evaluate``'s output (see `run_harness`)."""
    summary = {
        "results": {task: task_metrics(row) for task, row in output["results"].items()},
        "num_samples": {task: counts["effective"] for task, counts in output.get("n-samples", {}).items()},
        "num_fewshot": dict(output.get("n-shot", {})),
        "versions": _json_safe(output.get("versions", {})),
        "configs": sorted(output.get("configs", {})),
        "lm_eval_version": importlib.metadata.version("lm_eval"),
    }
    if log_samples:
        summary["samples"] = _json_safe(output.get("samples", {}))
    return summary


def task_metrics(row: dict[str, Any]) -> dict[str, float | None]:
    """``{"acc,none": 0.5, "acc_stderr,none": 0.1, "alias": ...}`` -> ``{"acc": 0.5, "acc_stderr": 0.1}``."""
    metrics = {}
    for key, value in row.items():
        metric, comma, filter_name = key.partition(",")
        if not comma:
            continue
        number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
        metrics[metric if filter_name == "none" else key] = None if number is None or math.isnan(number) else number
    return metrics


def _json_safe(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))
