"""The package's import graph: no cycles, the paper core imports nothing from the data, the judges or the glue,
`metrics` is a leaf, and nothing in the package runs files from `solutions/` by path (issue 20's layering)."""

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "ldm_lite"
# the paper core (§3): the models, the forward process, the samplers, the conditioners and how they are saved
CORE = {"schedule", "samplers", "attention", "unet", "autoencoder", "ldm", "conditioning", "text", "spatial",
        "checkpoint", "perceptual", "runtime", "paths", "latents", "fit", "errors", "validation"}
# the data, the judges and the glue above the core
ABOVE = {"datasets", "classifier", "segmenter", "grounding", "evaluation", "judge", "recipes", "train", "pipeline",
         "conditional", "image_to_image", "tradeoff", "tradeoff_views", "compression", "cli", "widgets", "plotting", "introspect",
         "exercises", "losses", "interop", "interop_diffusers"}


def imports() -> dict[str, set[str]]:
    """module -> the ldm_lite modules it imports anywhere in its file (top level or inside functions)."""
    graph: dict[str, set[str]] = {}
    for path in PKG.rglob("*.py"):
        parts = path.relative_to(PKG).with_suffix("").parts
        mod = ".".join(p for p in parts if p != "__init__") or "__init__"
        pkg = parts[:-1]
        out = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level:
                base = list(pkg[: len(pkg) - (node.level - 1)])
                names = [".".join(base + [node.module])] if node.module else [".".join(base + [a.name]) for a in node.names]
                out.update(n for n in names if n)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("ldm_lite."):
                out.add(node.module.removeprefix("ldm_lite."))
    return {m: {d for d in deps if d in graph and d != m} for m, deps in graph.items()}


def test_every_module_is_placed_in_a_layer():
    top = {m.split(".")[0] for m in imports()} - {"__init__"}
    assert top <= CORE | ABOVE | {"metrics"}, top - CORE - ABOVE


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle of `graph` as [a, b, ..., a], or None (depth-first search)."""
    state: dict[str, int] = {}

    def visit(m: str, path: list[str]) -> list[str] | None:
        state[m] = 1
        for d in sorted(graph.get(m, ())):
            if state.get(d) == 1:
                return path[path.index(d):] + [d]
            if d not in state and (found := visit(d, path + [d])):
                return found
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m, [m])):
            return found
    return None


def test_no_import_cycles():
    cycle = find_cycle(imports())
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_new_cycle_would_be_caught():
    graph = imports()
    cycle = find_cycle({**graph, "schedule": graph["schedule"] | {"ldm"}})  # ldm imports schedule
    assert cycle is not None and cycle[0] == cycle[-1] and {"schedule", "ldm"} <= set(cycle)


def test_the_core_imports_nothing_from_the_data_the_judges_or_the_glue():
    bad = {m: sorted(d for d in deps if d.split(".")[0] in ABOVE) for m, deps in imports().items()
           if m.split(".")[0] in CORE}
    assert not {m: d for m, d in bad.items() if d}, bad


def test_metrics_is_a_leaf():  # LPIPS and the device choice (`runtime.pick_device`) only
    assert imports()["metrics"] <= {"perceptual", "runtime"}, imports()["metrics"]
