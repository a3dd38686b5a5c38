"""Run records (summary.json with config.yaml) of any task, for the tables that the grid's tidy
frame does not hold: mixtures (several ops per run) and transfer runs (init.* of another run).

Folders that are no complete run are reported by path and why, as analysis.collate does; a
record's values are checked by the table that reads them."""

import json
from pathlib import Path

import yaml

from analysis.collate import run_folders
from grok.tracking import CONFIG, SUMMARY


def read_records(*roots) -> tuple[list[dict], list[str]]:
    """(records, problems): each complete run under `roots` as {"run", "summary", "config"}, and
    one line per folder left out."""
    records, problems = [], []
    for root in roots:
        if not Path(root).is_dir():
            problems.append(f"{root}: not a folder")
            continue
        for folder in run_folders(root):
            try:
                summary = json.loads((folder / SUMMARY).read_text())
                config = yaml.safe_load((folder / CONFIG).read_text())
            except FileNotFoundError as e:
                problems.append(f"{folder}: missing {Path(e.filename).name} (unfinished?)")
                continue
            except Exception as e:  # noqa: BLE001 - a corrupt record is skipped, not fatal
                problems.append(f"{folder}: unreadable ({type(e).__name__}: {e})")
                continue
            if not isinstance(summary, dict) or not isinstance(config, dict):
                problems.append(f"{folder}: unreadable record (not a mapping)")
            elif summary.get("status") != "complete":
                problems.append(f"{folder}: run not complete ({summary.get('error', summary.get('status'))})")
            else:
                records.append({"run": str(folder), "summary": summary, "config": config})
    return records, problems


def model_name(config: dict) -> str | None:
    m = config.get("model")
    return m.get("name") if isinstance(m, dict) else None
