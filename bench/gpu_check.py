#!/usr/bin/env python
"""Does a pack on the GPU train what the CPU trains? A pack of runs (different ops, fracs and
seeds, one early-stopping) on `--device` in float64 against each run alone on the CPU in float64:
every logged metric must agree to --tol. Prints the largest difference; exits 1 past --tol.

    python bench/gpu_check.py --device cuda
"""

import argparse
import json
import math
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from hydra import compose, initialize_config_dir  # noqa: E402

from grok.train import run, train_pack  # noqa: E402

BASE = ["logger=none", "task=poly", "p=23", "model.d_model=32", "model.d_head=8", "model.d_mlp=64",
        "train.steps=300", "train.eval_every=20", "train.checkpoint_every=100",
        "train.dtype=float64", "measures.full_every=5"]
RUNS = [["op=x+y", "frac=0.5", "seed=0"], ["op=x-y", "frac=0.7", "seed=1"],
        ["op=xy", "frac=0.5", "seed=2"],
        ["op=x+y", "frac=0.7", "seed=3", "train.early_stop_after=0", "grok.threshold=0.05"]]


def cfg(extra, device):
    with initialize_config_dir(str(REPO / "conf"), version_base="1.3"):
        return compose("config", overrides=[*BASE, *extra, f"train.device={device}"])


def rows(d):
    return [json.loads(line) for line in (Path(d) / "metrics.jsonl").read_text().splitlines()]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tol", type=float, default=1e-6)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp())
    packed = train_pack([cfg(r, args.device) for r in RUNS], [tmp / f"pack{i}" for i in range(len(RUNS))])
    worst, where = 0.0, None
    for i, r in enumerate(RUNS):
        alone = run(cfg(r, "cpu"), tmp / f"alone{i}")
        assert packed[i]["steps"] == alone["steps"] and packed[i]["verdict"] == alone["verdict"], i
        for a, b in zip(rows(tmp / f"pack{i}"), rows(tmp / f"alone{i}"), strict=True):
            for k, v in a.items():
                if isinstance(v, float) and math.isfinite(v) and k != "neuron_freq":
                    d = abs(v - b[k]) / max(1.0, abs(b[k]))
                    if d > worst:
                        worst, where = d, (i, a["step"], k)
    print(f"pack on {args.device} vs alone on cpu, float64: steps {[s['steps'] for s in packed]}, "
          f"max rel diff {worst:.2e} at {where}")
    sys.exit(0 if worst <= args.tol else 1)


if __name__ == "__main__":
    main()
