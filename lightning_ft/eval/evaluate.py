"""`lightning-ft eval`: score a model (and a baseline, side by side) on evaluation sets, optionally with an LLM judge
and lm-evaluation-harness tasks; write ``report.json``, ``items.jsonl`` and print a short table."""

from __future__ import annotations

import gc
import json
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lightning_ft.errors import UsageError
from lightning_ft.eval.bootstrap import paired_bootstrap
from lightning_ft.eval.harness import run_harness
from lightning_ft.eval.items import ItemFormat
from lightning_ft.eval.judge import (
    COMPARE_PREFIX,
    GRADE_PREFIX,
    EndpointJudge,
    LocalJudge,
    compare,
    comparison_scores,
    grade,
    summarize_comparisons,
    summarize_grades,
)
from lightning_ft.eval.metrics import GENERATION_METRICS
from lightning_ft.eval.report import format_table, set_report
from lightning_ft.eval.scoring import GenerationSettings, ReplyCache, SetScores, score_set
from lightning_ft.eval.sets import EvalSet, eval_sets
from lightning_ft.model.export import load_export, read_manifest
from lightning_ft.model.fingerprint import weights_fingerprint
from lightning_ft.model.spec import DTypeName, ModelSpec
from lightning_ft.options import check_option

METRICS = ("perplexity", *GENERATION_METRICS, "choice")
JudgeMode = Literal["auto", "single", "pairwise", "both"]


def evaluate(
    model: str,
    data: list[str],
    adapter: str | None = None,
    baseline: str | None = None,
    baseline_adapter: str | None = None,
    metrics: list[str] | None = None,
    format: ItemFormat = "auto",
    fields: dict[str, str] | None = None,
    system_prompt: str | None = None,
    limit: int | None = None,
    max_new_tokens: int = 256,
    temperature: float = 0.0,
    top_p: float = 1.0,
    seed: int = 0,
    batch_size: int = 8,
    max_length: int = 2048,
    judge: str | None = None,
    judge_url: str | None = None,
    judge_model: str | None = None,
    judge_api_key_env: str = "OPENAI_API_KEY",
    judge_mode: JudgeMode = "auto",
    judge_criteria: list[str] | None = None,
    judge_retries: int = 2,
    judge_prefill: bool | None = None,
    harness: list[str] | None = None,
    harness_include: str | None = None,
    harness_limit: int | None = None,
    harness_chat_template: bool = True,
    bootstrap_samples: int = 1000,
    dtype: DTypeName = "float32",
    output: str = "eval_report",
) -> dict[str, Any]:
    """Evaluate a model, side by side with a baseline, on data files or a recipe's validation data.

    Data: the training formats, GSM8K-style Q/A, MT-bench turns, multiple choice. With ``baseline``, the same items
    are scored for both models and each metric's difference comes with a paired bootstrap 95% confidence interval.

    Args:
        model: A base model (directory, GGUF directory or hub id), a lightning-ft export, or a merged model.
        data: Evaluation data files or hub ids, or recipes (``.yaml``: their validation sets); one report section each.
        adapter: An adapter export to apply to ``model`` (by default an export applies to the base it records).
        baseline: The model to compare with, e.g. the base the adapter was trained from.
        baseline_adapter: An adapter export to apply to ``baseline``.
        metrics: Any of perplexity, exact_match, bleu, rouge_l, chrf, choice (default: all; each where it applies).
        format: Item format of the data files, or ``auto`` to recognise it per record.
        fields: Rename the fields of ``format``, as in training.
        system_prompt: System message for prompts that have none.
        limit: Evaluate only the first ``limit`` records of each set.
        max_new_tokens: Longest generated reply.
        temperature: 0 decodes greedily; above 0 samples (seeded by ``seed``).
        top_p: Nucleus of sampling.
        seed: Seed of sampling and of the bootstrap.
        batch_size: Prompts per generation batch and sequences per scoring batch.
        max_length: Longest conversation scored for perplexity (longer ones are cut at the end and counted).
        judge: A local judge model (any path ``model`` takes).
        judge_url: An OpenAI-compatible endpoint for the judge (e.g. http://127.0.0.1:8000/v1).
        judge_model: The judge's model name at ``judge_url``.
        judge_api_key_env: Environment variable holding the endpoint's API key (never logged).
        judge_mode: ``single`` grading, ``pairwise`` against the baseline (both orders), ``both``; ``auto`` grades
            and, with a baseline, also compares.
        judge_criteria: What the judge grades (default: accuracy, completeness, fluency, helpfulness).
        judge_retries: Retries of a verdict that does not parse.
        judge_prefill: Start the judge's reply with the verdict's key (``{"score":``), so a small local judge states
            its verdict before it rambles (SmolLM2-135M: 10 of 10 verdicts parse with it, 3 of 10 without). Default:
            on for a local judge; endpoints cannot continue a reply, so it must stay off there.
        harness: lm-evaluation-harness tasks to run on the same model objects (needs the ``eval`` extra).
        harness_include: A folder of task YAMLs for ``harness`` (local tasks).
        harness_limit: Documents per harness task.
        harness_chat_template: Render harness prompts with the model's chat template, as our own metrics do.
        bootstrap_samples: Resamples of the confidence intervals.
        dtype: Dtype to load the models in.
        output: Report directory: report.json, items.jsonl, and generations/ (replies cached as they are made).
    """
    chosen = list(metrics) if metrics else list(METRICS)
    for metric in chosen:
        check_option("metric", metric, METRICS)
    check_option("judge_mode", judge_mode, JudgeMode)
    if judge and judge_url:
        raise UsageError("Give either --judge (a local model) or --judge_url (an endpoint), not both")
    if judge_url and not judge_model:
        raise UsageError("--judge_url needs --judge_model: the model name the endpoint serves")
    if judge_url and judge_prefill:
        raise UsageError("--judge_prefill needs a local judge (--judge MODEL): an endpoint cannot continue a reply")
    prefill = judge_prefill if judge_prefill is not None else judge is not None
    modes = judge_modes(judge_mode, judge is not None or judge_url is not None, baseline is not None)
    sets = eval_sets(data, format, fields, system_prompt, limit)
    settings = GenerationSettings(max_new_tokens, temperature, top_p, seed, batch_size)
    out = Path(output)
    roles = {"model": (model, adapter)} | ({"baseline": (baseline, baseline_adapter)} if baseline else {})
    identities = {role: model_identity(path, extra) for role, (path, extra) in roles.items()}
    results: dict[str, dict[str, SetScores]] = {}
    harness_results: dict[str, Any] = {}
    for role, (path, extra) in roles.items():
        network, tokenizer = load_model(path, extra, dtype)
        results[role] = {}
        for eval_set in sets:
            cache = ReplyCache(out / "generations", {"model": identities[role], "set": eval_set.name, **vars(settings)})
            description = f"{role}: {eval_set.name}"
            results[role][eval_set.name] = score_set(
                network, tokenizer, eval_set, chosen, settings, cache, max_length, bool(modes), description
            )
        if harness:
            harness_results[role] = run_harness(
                network,
                tokenizer,
                harness,
                include_path=harness_include,
                limit=harness_limit,
                batch_size=batch_size,
                apply_chat_template=harness_chat_template,
                seed=seed,
            )
        del network
        gc.collect()
    pairwise = {}
    if modes:
        pairwise = run_judge(
            sets, results, modes, judge, judge_url, judge_model, judge_api_key_env, judge_criteria, judge_retries,
            prefill, settings, dtype,
        )  # fmt: skip
    report = build_report(sets, results, pairwise, identities, harness_results, bootstrap_samples, seed)
    report["settings"] = {
        "metrics": chosen,
        "generation": vars(settings),
        "max_length": max_length,
        "judge": judge_settings(judge, judge_url, judge_model, modes, judge_criteria, prefill),
        "bootstrap_samples": bootstrap_samples,
        "data": data,
        "limit": limit,
    }
    write_outputs(out, report, sets, results, pairwise)
    print(format_table(report))
    print(f"Report: {out / 'report.json'}; per item: {out / 'items.jsonl'}")
    return {"report": str(out / "report.json"), "items": str(out / "items.jsonl")}


def judge_modes(mode: str, have_judge: bool, have_baseline: bool) -> set[str]:
    if not have_judge:
        if mode != "auto":
            raise UsageError(f"--judge_mode {mode} needs a judge: --judge MODEL or --judge_url URL")
        return set()
    if mode in ("pairwise", "both") and not have_baseline:
        raise UsageError(f"--judge_mode {mode} compares with the baseline: give --baseline")
    if mode == "auto":
        return {"single", "pairwise"} if have_baseline else {"single"}
    return {"single", "pairwise"} if mode == "both" else {mode}


def load_model(path: str, adapter: str | None, dtype: DTypeName) -> tuple[Any, Any]:
    if adapter is not None:
        network, tokenizer = load_export(adapter, dtype=dtype, base=path)
    else:
        network, tokenizer = load_export(path, dtype=dtype)
    if not hasattr(tokenizer, "apply_chat_template") or getattr(tokenizer, "tokenizer", None) is not None:
        raise UsageError(f"{adapter or path}: vision-language models are not evaluated by `lightning-ft eval` yet")
    return network, tokenizer


def model_identity(path: str, adapter: str | None) -> dict[str, Any]:
    """What was evaluated: the paths, the export's kind and base, and a fingerprint of the weight files."""
    weights = adapter or path
    manifest = read_manifest(weights) if Path(weights).is_dir() else None
    try:
        fingerprint = weights_fingerprint(ModelSpec(path=weights))
    except (OSError, ValueError):  # a hub id not in the local cache
        fingerprint = None
    identity = {"model": path, "adapter": adapter, "kind": manifest["kind"] if manifest else "base"}
    if manifest:
        identity["trained_from"] = manifest["base"]["path"]
    return {**identity, "fingerprint": fingerprint}


def run_judge(
    sets: list[EvalSet],
    results: dict[str, dict[str, SetScores]],
    modes: set[str],
    judge: str | None,
    judge_url: str | None,
    judge_model: str | None,
    api_key_env: str,
    criteria: list[str] | None,
    retries: int,
    prefill: bool,
    settings: GenerationSettings,
    dtype: DTypeName,
) -> dict[str, dict[str, Any]]:
    """Judge verdicts into ``results[role][set].judge``; returns the pairwise verdicts per set and item."""
    if judge_url is not None:
        backend = EndpointJudge(judge_url, judge_model, api_key_env=api_key_env)
    else:
        network, tokenizer = load_model(judge, None, dtype)
        backend = LocalJudge(network, tokenizer)
    options = {"retries": retries, "seed": settings.seed}
    if criteria:
        options["criteria"] = tuple(criteria)
    pairwise: dict[str, dict[str, Any]] = {}
    for eval_set in sets:
        items = [item for item in eval_set.items if item.choices is None]
        if not items:
            continue
        if "single" in modes:
            for by_set in results.values():
                replies = by_set[eval_set.name].replies
                verdicts = grade(backend, items, replies, response_prefix=GRADE_PREFIX if prefill else None, **options)
                by_set[eval_set.name].judge = {verdict["id"]: verdict for verdict in verdicts}
        if "pairwise" in modes:
            model_replies = results["model"][eval_set.name].replies
            baseline_replies = results["baseline"][eval_set.name].replies
            prefix = COMPARE_PREFIX if prefill else None
            verdicts = compare(backend, items, model_replies, baseline_replies, response_prefix=prefix, **options)
            pairwise[eval_set.name] = {verdict["id"]: verdict for verdict in verdicts}
    return pairwise


def judge_settings(
    judge: str | None,
    judge_url: str | None,
    judge_model: str | None,
    modes: set[str],
    criteria: list[str] | None,
    prefill: bool,
) -> dict[str, Any] | None:
    if not modes:
        return None
    return {
        "model": judge or judge_model,
        "url": judge_url,
        "modes": sorted(modes),
        "criteria": criteria,
        "prefill": prefill,
    }


def build_report(
    sets: list[EvalSet],
    results: dict[str, dict[str, SetScores]],
    pairwise: dict[str, dict[str, Any]],
    identities: dict[str, dict[str, Any]],
    harness_results: dict[str, Any],
    samples: int,
    seed: int,
) -> dict[str, Any]:
    report: dict[str, Any] = {"models": identities, "sets": {}}
    for eval_set in sets:
        by_role = {role: by_set[eval_set.name] for role, by_set in results.items()}
        section = set_report(eval_set.items, by_role, samples, seed)
        judged = {role: summarize_grades(list(s.judge.values())) for role, s in by_role.items() if s.judge}
        if judged:
            section["judge"] = judged
        if eval_set.name in pairwise:
            section["pairwise_judge"] = pairwise_summary(list(pairwise[eval_set.name].values()), samples, seed)
        report["sets"][eval_set.name] = section
    if harness_results:
        report["harness"] = harness_results
    return report


def pairwise_summary(verdicts: list[dict[str, Any]], samples: int, seed: int) -> dict[str, Any]:
    """The judge's pairwise counts, and the model's win rate with a bootstrap 95% interval over items."""
    summary = summarize_comparisons(verdicts)
    values = np.array([value for value in comparison_scores(verdicts) if value is not None], dtype=float)
    if len(values):
        interval = paired_bootstrap(lambda i: float(values[i].mean()), lambda i: 0.0, len(values), samples, seed=seed)
        summary["ci95"] = [interval["low"], interval["high"]]
    return summary


def write_outputs(
    out: Path,
    report: dict[str, Any],
    sets: list[EvalSet],
    results: dict[str, dict[str, SetScores]],
    pairwise: dict[str, dict[str, Any]],
) -> None:
    """``report.json`` and ``items.jsonl`` (per item: prompt, reference, each model's replies, scores, verdicts)."""
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for eval_set in sets:
        for item in eval_set.items:
            line: dict[str, Any] = {"set": eval_set.name, **item.to_dict()}
            for role, by_set in results.items():
                scores = by_set[eval_set.name]
                line[role] = {
                    key: value
                    for key, value in {
                        "replies": scores.replies.get(item.id),
                        "scores": scores.scores.get(item.id),
                        "reference_loss": scores.losses.get(item.id),
                        "choice": scores.choices.get(item.id),
                        "judge": scores.judge.get(item.id),
                    }.items()
                    if value is not None
                }
            if item.id in pairwise.get(eval_set.name, {}):
                line["pairwise_judge"] = pairwise[eval_set.name][item.id]
            lines.append(json.dumps(line, ensure_ascii=False))
    (out / "items.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False), encoding="utf-8")
