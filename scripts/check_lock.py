"""Does requirements/lock.txt agree with pyproject.toml? Exit 1, one line per disagreement.

Every requirement of the project, of each extra and of requirements/constraints.in (the CPU torch
build) must be pinned in the lock to a version its range allows; the lock pins nothing twice. `make lock`
rewrites the lock; run it after changing pyproject.toml's dependencies.
"""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]


def read_lock(text: str) -> tuple[dict[str, Version], list[str]]:
    """{name: pinned version} of a pip-compile output, and the lines that are not a plain pin."""
    pins: dict[str, Version] = {}
    problems = []
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        req = Requirement(line)
        spec = list(req.specifier)
        if len(spec) != 1 or spec[0].operator != "==":
            problems.append(f"lock: {line!r} is not an exact pin (name==version)")
            continue
        name = canonicalize_name(req.name)
        if name in pins:
            problems.append(f"lock: {req.name} is pinned twice")
        pins[name] = Version(spec[0].version)
    return pins, problems


def disagreements(pyproject: str, lock: str, constraints: str = "") -> list[str]:
    project = tomllib.loads(pyproject)["project"]
    wanted = [("pyproject.toml", Requirement(r)) for r in project.get("dependencies", [])]
    for reqs in project.get("optional-dependencies", {}).values():
        wanted += [("pyproject.toml", Requirement(r)) for r in reqs]
    for line in constraints.splitlines():
        if line.split("#", 1)[0].strip():
            wanted.append(("constraints.in", Requirement(line.split("#", 1)[0].strip())))
    pins, problems = read_lock(lock)
    for source, req in wanted:
        if req.marker is not None and not req.marker.evaluate({"extra": ""}):
            continue
        pinned = pins.get(canonicalize_name(req.name))
        if pinned is None:
            problems.append(f"lock: {req.name} ({req}) is in {source} but not in the lock")
        elif not req.specifier.contains(pinned, prereleases=True):
            problems.append(f"lock: {req.name}=={pinned} is outside {source}'s {req}")
    return problems


def main() -> int:
    req = ROOT / "requirements"
    problems = disagreements((ROOT / "pyproject.toml").read_text(), (req / "lock.txt").read_text(),
                             (req / "constraints.in").read_text())
    for line in problems:
        print(f"{line}: run `make lock`", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
