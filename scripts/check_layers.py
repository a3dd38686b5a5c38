"""The import contract of pyproject.toml's [tool.import-layers]: every module placed in a layer,
no import from a lower layer up to a higher one, no circle, no forbidden import. Every import
counts, including those inside functions. Prints one line per breach and exits 1 (0: none).

    python scripts/check_layers.py [ROOT]     (ROOT: the repository, by default this one)
"""

import ast
import sys
import tomllib
from pathlib import Path


def module_name(root: Path, f: Path) -> str:
    parts = list(f.relative_to(root).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(root: Path, roots: list[str], aliases: dict[str, str] | None = None) -> dict[str, dict[str, int]]:
    """{module: {imported project module: line}} for every module under `roots`. `aliases` maps
    the name a module is installed under to its name in the checkout (grok_analysis: analysis),
    so an import by either name counts."""
    files = []
    for r in roots:
        path = root / r
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path] if path.is_file() else []
    mods = {module_name(root, f): f for f in files}

    def resolve(name: str) -> str | None:
        for installed, here in (aliases or {}).items():
            if name == installed or name.startswith(installed + "."):
                name = here + name[len(installed):]
                break
        while name:
            if name in mods:
                return name
            name = name.rpartition(".")[0]
        return None

    graph = {}
    for m, f in mods.items():
        pkg = m if f.name == "__init__.py" else m.rpartition(".")[0]
        edges = {}
        for node in ast.walk(ast.parse(f.read_text(), str(f))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    p = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    base = ".".join(p + ([base] if base else []))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            for t in {resolve(n) for n in names} - {None, m}:
                edges.setdefault(t, node.lineno)
        graph[m] = edges
    return graph


def placed(module: str, entries: dict[str, int]) -> str | None:
    """The entry that places `module`: the longest naming it or a package above it."""
    if module + ".__init__" in entries:  # a package's own module, placed apart from its modules
        return module + ".__init__"
    best = [e for e in entries if module == e or module.startswith(e + ".")]
    return max(best, key=len) if best else None


def circles(graph: dict[str, dict]) -> list[list[str]]:
    """Strongly connected groups of two or more modules (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def breaches(root: Path) -> list[str]:
    conf = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["import-layers"]
    layers = conf["layers"]
    entries = {e: i for i, layer in enumerate(layers) for e in layer}
    graph = imports(root, conf["roots"], conf.get("aliases"))
    out = []
    for m in sorted(graph):
        if placed(m, entries) is None:
            out.append(f"{m}: in no layer of [tool.import-layers]")
    for m, edges in sorted(graph.items()):
        here = placed(m, entries)
        for t, line in sorted(edges.items()):
            there = placed(t, entries)
            if here is not None and there is not None and entries[there] < entries[here]:
                out.append(f"{m} imports {t} (line {line}): layer {entries[here] + 1} ({here}) may not "
                           f"import layer {entries[there] + 1} ({there}), which is above it")
            for a, b in conf.get("forbidden", ()):
                if (m == a or m.startswith(a + ".")) and (t == b or t.startswith(b + ".")):
                    out.append(f"{m} imports {t} (line {line}): {a} never imports {b}")
    for group in circles(graph):
        out.append(f"circle of imports: {', '.join(group)}")
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[0]) if argv else Path(__file__).resolve().parent.parent
    found = breaches(root)
    for line in found:
        print(line)
    if not found:
        print("import layers: kept")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
