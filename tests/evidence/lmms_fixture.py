"""lmms-eval results files written the way lmms-eval writes them (EvolvingLMMs-Lab/lmms-eval at
75571cfe0fa36ca5ec2e6aa2bb268f9d38295af3), for tests and the docs walkthrough:

- folder and name: `loggers/evaluation_tracker.py` `save_results_aggregated` (lines 206-212):
  OUTPUT_PATH / sanitize_model_name(model name) / f"{datetime_str}_results.json", the model name
  taken from `--model_args` by `GeneralConfigTracker._get_model_name` (lines 61-74, `pretrained=`
  among its prefixes), `sanitize_model_name` in `utils.py` (lines 335-344: the last two path
  parts, `/` -> `__`), `datetime_str` = `utils.get_datetime_str` (lines 911-919, "%Y%m%d_%H%M%S");
  json.dumps(indent=2, ensure_ascii=False) of the results updated with `task_hashes` and the
  tracker's fields (lines 197-204).
- keys: `evaluator.py` `evaluate` (lines 1446-1464: results, group_subtasks, configs, versions,
  n-shot, higher_is_better, n-samples) and `simple_evaluate` (lines 561-609: config with model,
  model_args, batch_size ... resolved_cli_args; git_hash, git_branch, lmms_eval_version, date,
  usage); per task `evaluator_utils.py` `consolidate_results` (lines 423-447: alias,
  "<metric>,<filter>", "<metric>_stderr,<filter>", _stderr_clt and _stderr_clustered) and
  `prepare_print_tasks` (lines 349-363: "samples" dropped); a task's config is
  `TaskConfig.to_dict` (api/task.py lines 205-222), its metric_list from the task's YAML
  (tasks/mme/mme.yaml, tasks/pope/pope.yaml, tasks/textvqa/textvqa_val.yaml).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

# per task: (metric list as in its YAML, documents in its test split)
TASKS: dict[str, tuple[list[str], int]] = {
    "mme": (["mme_perception_score", "mme_cognition_score"], 2374),
    "pope": (
        ["pope_accuracy", "pope_precision", "pope_recall", "pope_f1_score", "pope_yes_ratio"],
        9000,
    ),
    "textvqa_val": (["exact_match", "submission"], 5000),
}


def sanitize_model_name(model_name: str) -> str:
    """lmms-eval's `utils.sanitize_model_name` (full_path=False)."""
    parts = model_name.split("/")
    last_two = "/".join(parts[-2:]) if len(parts) > 1 else parts[-1]
    return re.sub(r"[\"<>:/\|\\?\*\[\]]+", "__", last_two)


def _task_entry(task: str, values: dict[str, Any]) -> dict[str, Any]:
    entry: dict[str, Any] = {"alias": task}
    for metric in TASKS[task][0]:
        value = values.get(metric)
        entry[f"{metric},none"] = value
        mean_like = metric in ("exact_match", "submission")  # bootstrappable means only
        entry[f"{metric}_stderr,none"] = 0.0065 if mean_like and value is not None else "N/A"
        entry[f"{metric}_stderr_clt,none"] = "N/A" if value is None else 0.0064
        entry[f"{metric}_stderr_clustered,none"] = "N/A"
    return entry


def _config(task: str) -> dict[str, Any]:
    metrics, _ = TASKS[task]
    out: dict[str, Any] = {
        "task": task,
        "dataset_path": f"lmms-lab-encoder/{task.split('_')[0]}",
        "test_split": "validation" if task == "textvqa_val" else "test",
        "full_docs": False,
        "process_results_use_image": False,
        "doc_to_visual": f"<function {task}_doc_to_visual at 0x7f0c2a1b3d90>",
        "doc_to_text": f"<function {task}_doc_to_text at 0x7f0c2a1b3e20>",
        "doc_to_target": "answer",
        "process_results": f"<function {task}_process_results at 0x7f0c2a1b3eb0>",
        "description": "",
        "target_delimiter": " ",
        "fewshot_delimiter": "\n\n",
        "num_fewshot": 0,
        "metric_list": [
            {
                "metric": m,
                "aggregation": f"<function {task}_aggregate at 0x7f0c>",
                "higher_is_better": True,
            }
            for m in metrics
        ],
        "output_type": "generate_until",
        "generation_kwargs": {
            "max_new_tokens": 16,
            "temperature": 0,
            "top_p": 1.0,
            "num_beams": 1,
            "do_sample": False,
            "until": ["\n\n"],
        },
        "repeats": 1,
        "should_decontaminate": False,
        "score_key": "score",
        "auto_strip_thinking": False,
    }
    if task != "textvqa_val":
        out["metadata"] = [{"version": 0.0}]
    return out


def results_json(
    pretrained: str, scores: dict[str, dict[str, Any]], stamp: str, *, model: str = "llava_hf",
    model_args_extra: str = ",device_map=auto", output_path: str = "lmms_out/",
) -> dict[str, Any]:  # fmt: skip
    """The object lmms-eval writes for one run of `model` with `pretrained` on the tasks in
    `scores` ({task: {metric: value}}), at `stamp` (its datetime_str)."""
    tasks = sorted(scores)
    model_args = f"pretrained={pretrained}{model_args_extra}"
    results: dict[str, Any] = {
        "results": {t: _task_entry(t, scores[t]) for t in tasks},
        "group_subtasks": {t: [] for t in reversed(tasks)},
        "configs": {t: _config(t) for t in tasks},
        "versions": dict.fromkeys(tasks, "Yaml"),
        "n-shot": dict.fromkeys(tasks, 0),
        "higher_is_better": {t: dict.fromkeys(TASKS[t][0], True) for t in tasks},
        "n-samples": {t: {"original": TASKS[t][1], "effective": TASKS[t][1]} for t in tasks},
        "config": {
            "model": model,
            "model_args": model_args,
            "model_backend": "lmms_eval.models.simple.llava_hf.LlavaHf (simple)",
            "batch_size": "1",
            "batch_sizes": [],
            "device": None,
            "use_cache": None,
            "limit": None,
            "offset": 0,
            "bootstrap_iters": 100000,
            "gen_kwargs": "",
            "random_seed": 0,
            "numpy_seed": 1234,
            "torch_seed": 1234,
            "fewshot_seed": 1234,
            "resolved_cli_args": {
                "model": model,
                "model_args": model_args,
                "tasks": ",".join(tasks),
                "batch_size": "1",
                "output_path": output_path,
                "log_samples": False,
            },
        },
        "git_hash": "75571cf",
        "git_branch": "main",
        "lmms_eval_version": "0.7.0",
        "date": stamp,
        "usage": {},
        "task_hashes": {},
        "model_source": model,
        "model_name": pretrained,
        "model_name_sanitized": sanitize_model_name(pretrained),
        "system_instruction": None,
        "system_instruction_sha": None,
        "fewshot_as_multiturn": False,
        "chat_template": None,
        "chat_template_sha": None,
        "start_time": 1523.41,
        "end_time": 2931.07,
        "total_evaluation_time_seconds": "1407.66",
    }
    return results


def write_results(
    output_path: str | Path, pretrained: str, scores: dict[str, dict[str, Any]],
    stamp: str = "20250314_101500", **kwargs: Any,
) -> Path:  # fmt: skip
    """Write one run's results where lmms-eval puts them; returns the file."""
    folder = Path(output_path) / sanitize_model_name(pretrained)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stamp.replace(':', '-')}_results.json"
    data = results_json(pretrained, scores, stamp, output_path=str(output_path), **kwargs)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
    return path


def scores_for(k: int) -> dict[str, dict[str, Any]]:
    """Plausible scores of the k-th checkpoint on the three tasks (rising with k, POPE's F1
    falling), with textvqa's `submission` null as lmms-eval records it."""
    return {
        "mme": {"mme_perception_score": 1200.0 + 37.5 * k, "mme_cognition_score": 250.0 + 5 * k},
        "pope": {
            "pope_accuracy": 0.80 + 0.01 * k,
            "pope_precision": 0.9,
            "pope_recall": 0.7,
            "pope_f1_score": 0.85 - 0.01 * k,
            "pope_yes_ratio": 0.4,
        },
        "textvqa_val": {"exact_match": 0.40 + 0.02 * k, "submission": None},
    }
