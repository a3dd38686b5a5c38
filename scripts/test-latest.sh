#!/usr/bin/env bash
# `make test-latest`: install the newest versions pyproject.toml allows (not the lock) into a
# temporary virtual environment, run the default suite there, and list where those versions
# differ from requirements/lock.txt. A failure here is a break a new user meets after the next
# `make lock`: fix the code, or bound the dependency above in pyproject.toml.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m venv "$tmp/venv"
py="$tmp/venv/bin/python"
"$py" -m pip install --quiet --upgrade pip
# constraints.in holds only the CPU torch build; everything else takes its newest allowed release.
"$py" -m pip install --quiet --upgrade --upgrade-strategy eager -c requirements/constraints.in -e '.[test,interp]'
"$py" - <<'PY'
import importlib.metadata as md, re
from pathlib import Path
lock = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", Path("requirements/lock.txt").read_text(), re.M))
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
lock = {norm(k): v for k, v in lock.items()}
newer = sorted(f"{d.metadata['Name']} {lock[norm(d.metadata['Name'])]} -> {d.version}"
               for d in md.distributions()
               if norm(d.metadata["Name"]) in lock and lock[norm(d.metadata["Name"])] != d.version)
print("newest allowed vs lock:", "; ".join(newer) if newer else "the lock is the newest")
PY
"$py" -m pytest -q -p no:cacheprovider "$@"
