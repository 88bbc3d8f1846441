"""The shape of the torch_tfmbs package, read from its source with `ast`:
no import cycle between its modules (counting imports inside functions,
which is how a cycle hides), no module importing another inside a function,
and one place that checks act_mode / packing / method."""
import ast
import pathlib

import pytest
import torch

PACKAGE = "torch_tfmbs"
PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent / PACKAGE
SOURCES = {p.stem: p for p in sorted(PACKAGE_DIR.glob("*.py"))}
INIT = "__init__"


def _tree(name):
    return ast.parse(SOURCES[name].read_text(), filename=str(SOURCES[name]))


def _intra_package_targets(node):
    """The package modules an Import/ImportFrom node imports ("_C", the
    extension, included: it imports nothing back)."""
    targets = []
    if isinstance(node, ast.Import):
        for alias in node.names:
            parts = alias.name.split(".")
            if parts[0] == PACKAGE:
                targets.append(parts[1] if len(parts) > 1 else INIT)
        return targets
    if node.level == 0:
        if node.module is None or node.module.split(".")[0] != PACKAGE:
            return targets
        parts = node.module.split(".")[1:]
    else:
        # The package is flat: level 1 is torch_tfmbs itself.
        assert node.level == 1, f"import beyond the package: level {node.level}"
        parts = node.module.split(".") if node.module else []
    if parts:
        targets.append(parts[0])
    else:
        # `from . import x`: x is a module, or a name of __init__.
        for alias in node.names:
            targets.append(alias.name if alias.name in SOURCES or alias.name == "_C" else INIT)
    return targets


def _imports(name):
    """[(target module, line, inside a function or class?)] of a module."""
    found = []

    def visit(node, nested):
        for child in ast.iter_child_nodes(node):
            inner = nested or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda,
                                                 ast.ClassDef))
            if isinstance(child, (ast.Import, ast.ImportFrom)):
                found.extend((t, child.lineno, nested) for t in _intra_package_targets(child))
            visit(child, inner)

    visit(_tree(name), False)
    return found


def _graph():
    return {name: sorted({t for t, _, _ in _imports(name) if t != name}) for name in SOURCES}


def _find_cycle(graph):
    """One cycle of `graph` as [a, b, ..., a], or None."""
    state = {}  # name -> "open" while on the DFS stack, "done" after

    def dfs(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in graph.get(node, ()):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = dfs(nxt, stack)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in graph:
        if node not in state:
            cycle = dfs(node, [])
            if cycle:
                return cycle
    return None


def test_sources_are_found():
    assert {INIT, "device", "memory", "random", "quant", "nn", "_device_index"} <= set(SOURCES)


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": ["b"], "b": ["c"], "c": ["a"]}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": ["b", "c"], "b": ["c"], "c": []}) is None


def test_function_level_imports_are_seen():
    tree = ast.parse("def f():\n    from .device import _index\n    from . import fabric\n")
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert [t for n in nodes for t in _intra_package_targets(n)] == ["device", "fabric"]


def test_no_import_cycle_in_the_package():
    graph = _graph()
    cycle = _find_cycle(graph)
    assert cycle is None, f"import cycle: {' -> '.join(cycle)}"


# The one import deferred on purpose: torch.tfmbs's module __getattr__ loads
# the inductor backend when inductor asks for its classes, as importing
# inductor with the package would cost every `import torch` about a second.
# The cycle check above still counts it.
DEFERRED_IMPORTS = {("device", "_inductor")}


def test_no_module_imports_another_inside_a_function():
    nested = [f"{name}.py:{line} imports {target}"
              for name in SOURCES for target, line, inside in _imports(name)
              if inside and (name, target) not in DEFERRED_IMPORTS]
    assert not nested, ("imports inside a function or class hide import cycles; import at the "
                        "top of the module:\n" + "\n".join(nested))


def test_device_index_is_a_leaf():
    assert _graph()["_device_index"] == ["_C"]
    for name in ("device", "memory", "random", "fabric"):
        assert "_device_index" in _graph()[name], name
        assert "device" not in _graph()[name], name


# ------------------------------------------------- act_mode / packing / method

_SETTINGS = {"ACT_MODES", "PACKINGS", "METHODS"}


def test_allowed_values_are_checked_only_by_the_quant_validators():
    """`x in/not in ACT_MODES` (or PACKINGS, METHODS) outside quant.py's
    check_* functions is a second place deciding what is allowed."""
    stray = []
    for name in SOURCES:
        tree = _tree(name)
        allowed_spans = []
        if name == "quant":
            allowed_spans = [(f.lineno, f.end_lineno) for f in tree.body
                             if isinstance(f, ast.FunctionDef) and
                             (f.name.startswith("check_") or f.name == "_check")]
        for node in ast.walk(tree):
            if not isinstance(node, ast.Compare):
                continue
            if not any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
                continue
            names = {n.id if isinstance(n, ast.Name) else n.attr for n in ast.walk(node)
                     if isinstance(n, (ast.Name, ast.Attribute))}
            if names & _SETTINGS and not any(a <= node.lineno <= b for a, b in allowed_spans):
                stray.append(f"{name}.py:{node.lineno}")
    assert not stray, f"validate with quant.check_act_mode/check_packing/check_method: {stray}"


def test_validators_messages():
    from torch_tfmbs import quant

    assert quant.check_act_mode("fp32", "X") == "fp32"
    assert quant.check_packing("t2b", "X") == "t2b"
    assert quant.check_method("sign", "X") == "sign"
    with pytest.raises(ValueError) as e:
        quant.check_act_mode("int4", "TFMBSLinear")
    assert str(e.value) == "TFMBSLinear: act_mode='int4' is not one of ('int8', 'ternary', 'fp32')"
    with pytest.raises(ValueError) as e:
        quant.check_packing("pt4", "fabric_linear")
    assert str(e.value) == "fabric_linear: packing='pt4' is not one of ('pt5', 't2b')"
    with pytest.raises(ValueError) as e:
        quant.check_method("nope", "ternarize")
    assert str(e.value) == "ternarize: method='nope' is not one of ('absmean', 'sign', 'threshold')"


@pytest.mark.parametrize("setting,bad", [("act_mode", "int4"), ("packing", "pt4"),
                                         ("method", "nope")])
def test_every_entry_point_rejects_a_bad_setting_alike(setting, bad):
    import torch

    import torch_tfmbs
    from torch_tfmbs import quant

    allowed = {"act_mode": quant.ACT_MODES, "packing": quant.PACKINGS, "method": quant.METHODS}
    tail = f"{setting}={bad!r} is not one of {allowed[setting]}"
    calls = [  # (the name the message starts with, the call)
        ("TFMBSLinear", lambda: torch_tfmbs.TFMBSLinear(3, 4, **{setting: bad})),
        ("fabric_linear", lambda: torch_tfmbs.fabric_linear(**{setting: bad}).__enter__()),
        # convert() passes the settings to TFMBSLinear.from_torch.
        ("TFMBSLinear", lambda: torch_tfmbs.convert(torch.nn.Sequential(torch.nn.Linear(3, 4)),
                                                    errors="raise", **{setting: bad})),
    ]
    if setting == "packing":
        calls += [("pack", lambda: quant.pack(torch.zeros(3, dtype=torch.int8), bad)),
                  ("unpack", lambda: quant.unpack(torch.zeros(1, dtype=torch.uint8), 3, bad)),
                  ("packed_size", lambda: quant.packed_size(3, bad))]
    if setting == "method":
        calls.append(("ternarize", lambda: quant.ternarize(torch.randn(3), bad)))
    for where, call in calls:
        with pytest.raises((ValueError, RuntimeError)) as e:
            call()
        assert f"{where}: {tail}" in str(e.value), (where, str(e.value))
    if setting == "act_mode":
        # It shows the quantizing modes only: "fp32" has nothing to show.
        for mode in (bad, "fp32"):
            with pytest.raises(ValueError) as e:
                quant.quantize_activations(torch.randn(3), mode)
            assert str(e.value) == (f"quantize_activations: act_mode={mode!r} is not one of "
                                    "('int8', 'ternary')")


def test_old_act_mode_name_still_works_with_a_deprecation_warning():
    from torch_tfmbs import TFMBSLinear, quant

    with pytest.warns(DeprecationWarning, match="act_mode='none' is deprecated; use 'fp32'"):
        assert quant.check_act_mode("none", "TFMBSLinear") == "fp32"
    with pytest.warns(DeprecationWarning):
        layer = TFMBSLinear(8, 4, act_mode="none")
    assert layer.act_mode == "fp32"
    x = torch.randn(2, 8)
    packed = quant.pack_pt5(torch.randint(-1, 2, (32,), dtype=torch.int8))
    one = torch.ones(())
    op = torch.ops.tfmbs.ternary_linear
    assert torch.equal(op(x, packed, one, None, 4, 8, "pt5", "none"), op(x, packed, one, None, 4, 8, "pt5", "fp32"))
