"""Sweeps -> one tidy DataFrame, a row per run, from local records or from a W&B group.

A run folder is one with a `config.yaml` and a `summary.json` (see grok.tracking). Folders that are
half-written, corrupt or failed are reported by path and left out; they never stop the table.
"""

import json
from pathlib import Path

import pandas as pd
import yaml

from grok.tracking import CONFIG, SUMMARY

COLUMNS = ["sweep_id", "task", "op", "op_pretty", "p", "frac", "seed", "model", "optimizer",
           "verdict", "memorisation_step", "grok_step", "grok_delay", "best_test_acc",
           "final_test_acc", "steps", "wall_time_s", "run"]


def _row(summary: dict, config: dict, where: str) -> dict:
    row = {k: summary.get(k) for k in COLUMNS}
    # Older or foreign summaries may lack the run keys: fall back on the resolved config.
    row["task"] = row["task"] or config.get("task", {}).get("name")
    row["model"] = row["model"] or config.get("model", {}).get("name")
    row["optimizer"] = row["optimizer"] or config.get("optimizer", {}).get("name")
    for key in ("p", "frac", "seed", "sweep_id"):
        row[key] = config.get(key) if row[key] is None else row[key]
    if row["op"] is None:
        from grok.ops import parse_op
        op = parse_op(str(config["op"]))
        row["op"], row["op_pretty"] = op.canonical, op.pretty
    row["run"] = where
    return row


def run_folders(root) -> list[Path]:
    """Every folder under `root` (itself included) that holds a run record or tried to."""
    root = Path(root)
    found = {p.parent for name in (CONFIG, SUMMARY) for p in root.rglob(name)
             if ".hydra" not in p.parts and "wandb" not in p.parts}
    return sorted(found)


def load_runs(*roots) -> tuple[pd.DataFrame, list[str]]:
    """(runs, problems): one row per complete run under any of `roots`, and one line per folder
    that was skipped, naming its path and why."""
    rows, problems = [], []
    for root in roots:
        if not Path(root).is_dir():
            problems.append(f"{root}: not a folder")
            continue
        for folder in run_folders(root):
            try:
                summary = json.loads((folder / SUMMARY).read_text())
                config = yaml.safe_load((folder / CONFIG).read_text())
                if summary.get("status") != "complete":
                    why = summary.get("error", summary.get("status"))
                    problems.append(f"{folder}: run not complete ({why})")
                    continue
                rows.append(_row(summary, config, str(folder)))
            except FileNotFoundError as e:
                problems.append(f"{folder}: missing {Path(e.filename).name} (unfinished?)")
            except Exception as e:  # noqa: BLE001 - any corrupt record is skipped, not fatal
                problems.append(f"{folder}: unreadable ({type(e).__name__}: {e})")
    return pd.DataFrame(rows, columns=COLUMNS), problems


def from_wandb(path: str, group: str | None = None, api=None) -> pd.DataFrame:
    """The same schema from a W&B project ("entity/project"), one group (sweep) or all.
    Needs the network and an API key; offline runs are read from their folders instead."""
    if api is None:
        import wandb

        api = wandb.Api()
    runs = api.runs(path, filters={"group": group} if group else None)
    rows = []
    for r in runs:
        summary = dict(r.summary)
        if summary.get("status", "complete") != "complete" or "verdict" not in summary:
            continue
        config = {k: v for k, v in r.config.items() if not k.startswith("_")}
        rows.append(_row(summary, config, f"wandb:{path}/{r.id}"))
    return pd.DataFrame(rows, columns=COLUMNS)


def latest_sweep(outputs="outputs") -> Path | None:
    """The most recently written sweep folder; else the single-runs folder; else None."""
    sweeps = [p for p in Path(outputs, "sweeps").glob("*") if p.is_dir()]
    if sweeps:
        return max(sweeps, key=lambda p: p.stat().st_mtime)
    runs = Path(outputs, "runs")
    return runs if runs.is_dir() else None
