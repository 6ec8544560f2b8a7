"""The modules of src/ form a layered graph: no module imports (at top level or inside a function) one that imports it
back, directly or through others."""
import ast

from src.config import REPO


def import_graph() -> dict[str, set[str]]:
    """src module name -> the src modules it imports anywhere in its source."""
    modules = {p.stem: p for p in (REPO / "src").glob("*.py") if p.stem != "__init__"}
    graph = {}
    for name, path in modules.items():
        deps = set()
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level == 1 or base == "src" or base.startswith("src."):
                    base = base.removeprefix("src").lstrip(".") if node.level == 0 else base
                    deps |= {base.split(".")[0]} if base else {a.name for a in node.names}
            elif isinstance(node, ast.Import):
                deps |= {a.name.split(".")[1] for a in node.names if a.name.startswith("src.")}
        graph[name] = (deps & modules.keys()) - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state, stack = {}, []

    def visit(m):
        state[m] = "open"
        stack.append(m)
        for d in sorted(graph[m]):
            if state.get(d) == "open":
                return stack[stack.index(d):] + [d]
            if d not in state and (found := visit(d)):
                return found
        state[m] = "done"
        stack.pop()
        return None

    for m in sorted(graph):
        if m not in state and (found := visit(m)):
            return found
    return None


def test_src_has_no_import_cycle():
    graph = import_graph()
    assert {"render", "photo", "pixels", "compose", "signals"} <= graph.keys()
    assert "photo" not in graph["render"] and "render" not in graph["photo"]  # side by side, on pixels
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None
