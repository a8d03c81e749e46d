"""The package's layout holds: one concern per folder, arrows that point one way, no cycles,
collectives in one place, short files and classes, and tests that mirror the folders."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "alexnet2012"
# the levels, highest first: a module may import its own level or lower ones, never higher
LEVEL = {"cli": 6, "__main__": 6, "training": 5, "bench": 5, "report": 5, "weights": 5,
         "control": 4, "parallel": 3, "data": 3, "nets": 2, "config": 1, "files": 1}  # fmt: skip
COLLECTIVES = {
    "all_reduce", "all_gather", "all_gather_into_tensor", "all_gather_single", "broadcast",
    "broadcast_object_list", "reduce_scatter", "reduce_scatter_tensor", "reduce_scatter_single",
    "send", "recv", "isend", "irecv", "batch_isend_irecv", "barrier", "monitored_barrier",
    "all_to_all", "gather", "scatter", "reduce", "all_gather_object", "P2POp",
}  # fmt: skip


def modules() -> dict[str, Path]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def imports(name: str, path: Path, known: dict) -> set[str]:
    """The package modules ``name`` imports (anywhere in it, deferred imports included)."""
    out = set()
    package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name in known)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*up, base] if base else up)
            for a in node.names:
                target = f"{base}.{a.name}"
                if target in known:
                    out.add(target)
                elif base in known:
                    out.add(base)
    # importing a.b.c runs a/__init__ and a/b/__init__ first: those edges count too (the
    # package's own ancestors excepted: they are running already)
    out |= {up for t in out for up in _ancestors(t) if up in known}
    return out - {name} - set(_ancestors(name)) - {"alexnet2012"}


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def level(module: str) -> tuple[str, int]:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else ""
    return top, LEVEL.get(top, 0)


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_every_module_has_a_level():
    missing = {level(m)[0] for m in modules() if m != "alexnet2012" and level(m)[1] == 0}
    assert not missing, f"place {missing} in LEVEL"


def test_no_module_imports_upward():
    bad = []
    for src, targets in graph().items():
        if src == "alexnet2012":  # the package exports AlexNet2012 for users
            continue
        for dst in targets:
            if dst != "alexnet2012" and level(dst)[1] > level(src)[1]:
                bad.append(f"{src} -> {dst}")
    assert not bad, bad


def test_no_import_cycles():
    g = graph()
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(stack[stack.index(m) :] + [m])
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for n in sorted(g.get(m, ())):
            visit(n)
        stack.pop()

    for m in sorted(g):
        visit(m)
    # a package's __init__ re-exporting its own modules is not a cycle between concerns
    real = [c for c in cycles if len({x.rsplit(".", 1)[0] for x in c} | {c[0]}) > 1
            and not all(x.startswith(c[0]) or c[0].startswith(x) for x in c)]  # fmt: skip
    assert not real, real
    folders = {}
    for src, targets in g.items():
        for dst in targets:
            a, b = level(src)[0], level(dst)[0]
            if a != b and a and b:
                folders.setdefault(a, set()).add(b)
    for a, bs in folders.items():
        for b in bs:
            assert a not in folders.get(b, ()), f"{a} and {b} import each other"


def test_nets_stand_alone():
    for src, targets in graph().items():
        if level(src)[0] == "nets":
            assert all(level(t)[0] in ("nets", "config") for t in targets), (src, targets)


def test_only_comm_calls_collectives():
    bad = []
    for name, path in modules().items():
        if name.startswith("alexnet2012.parallel.comm"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr in COLLECTIVES:
                owner = ast.unparse(node.value)
                if owner in ("dist", "torch.distributed"):
                    bad.append(f"{name}: {owner}.{node.attr}")
    assert not bad, bad


def test_files_and_classes_are_short():
    long_files, long_classes = [], []
    for name, path in modules().items():
        text = path.read_text()
        if len(text.splitlines()) > 300:
            long_files.append(name)
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.ClassDef) and node.end_lineno - node.lineno + 1 > 125:
                long_classes.append(f"{name}.{node.name}")
    assert not long_files and not long_classes, (long_files, long_classes)


def test_tests_mirror_the_folders():
    folders = {p.name for p in PKG.iterdir() if (p / "__init__.py").is_file()}
    tests = ROOT / "tests"
    missing = [f for f in sorted(folders) if not list((tests / f).glob("test_*.py"))]
    assert not missing, f"no tests/<folder>/test_*.py for {missing}"


def test_imports_count_the_packages_they_pass_through():
    g = graph()
    # bench/probe imports from parallel.comm.bare: parallel/__init__ and comm/__init__ run too
    assert {"alexnet2012.parallel", "alexnet2012.parallel.comm"} <= g["alexnet2012.bench.probe"]


# the split holds no run control: what starts, watches and stops processes imports the split,
# never the other way round
SPLIT_MAY_IMPORT = ("parallel", "nets", "config", "files")


def test_the_split_imports_no_run_control():
    bad = [f"{src} -> {dst}" for src, targets in graph().items() if level(src)[0] == "parallel"
           for dst in targets if level(dst)[0] not in SPLIT_MAY_IMPORT]  # fmt: skip
    assert not bad, bad


# modules outside bench/ that read the clock, and why: none of them is a benchmark
CLOCKS = {
    "alexnet2012.training.state": "the run's own step time and images/s, logged as it trains",
    "alexnet2012.parallel.comm.group": "the exchange counters' wait time that bench reads",
}


def test_every_benchmark_lives_in_bench():
    bad = []
    for name, path in modules().items():
        if level(name)[0] == "bench":
            continue
        text, leaf = path.read_text(), name.rsplit(".", 1)[-1]
        if any(w in leaf for w in ("bench", "probe", "profile", "timing")):
            bad.append(f"{name}: named as a benchmark")
        elif ("perf_counter" in text or "import statistics" in text) and name not in CLOCKS:
            bad.append(f"{name}: times code (move it to bench/, or say why in CLOCKS)")
    assert not bad, bad
