"""Optional packages in the tests: a test that needs one skips in a plain local run, and fails instead where
SDBNN_REQUIRE_OPTIONAL promises it (CI, .ci/run); CI promises every optional module a test asks for."""

import ast
import re

import pytest
from helpers import REQUIRE_OPTIONAL, ROOT, require_optional

NOT_INSTALLED = "sdbnn_no_such_module"


def test_missing_module_skips_unless_the_environment_promises_it(monkeypatch):
    monkeypatch.delenv(REQUIRE_OPTIONAL, raising=False)
    with pytest.raises(pytest.skip.Exception, match=f"{NOT_INSTALLED} is not installed"):
        require_optional(NOT_INSTALLED)
    monkeypatch.setenv(REQUIRE_OPTIONAL, f"ffcv, {NOT_INSTALLED}")
    with pytest.raises(pytest.fail.Exception, match=f"{NOT_INSTALLED} is not installed.*{REQUIRE_OPTIONAL}"):
        require_optional(NOT_INSTALLED)
    require_optional("torch")  # installed: the test goes on


def _optional_modules(tree: ast.AST) -> set[str]:
    """Module names given to ``require_optional(...)`` or ``pytest.mark.optional(...)``, including the constant
    tuple of a ``for module in (...): require_optional(module)`` loop."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            function = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            arguments = node.args[:1] if function == "require_optional" else node.args if function == "optional" else []
            names |= {arg.value for arg in arguments if isinstance(arg, ast.Constant)}
        if isinstance(node, ast.For) and isinstance(node.iter, ast.Tuple):
            calls = [child for child in ast.walk(node) if isinstance(child, ast.Call)
                     and getattr(child.func, "id", "") == "require_optional"]
            if calls:
                names |= {element.value for element in node.iter.elts if isinstance(element, ast.Constant)}
    return names


def test_ci_requires_every_optional_module_the_tests_use():
    promised = set(re.search(r"SDBNN_REQUIRE_OPTIONAL=(\S+)", (ROOT / ".ci" / "run").read_text()).group(1).split(","))
    used, old_style = set(), []
    for path in sorted((ROOT / "tests").glob("*.py")):
        if path.name == "test_optional_packages.py":
            continue
        text = path.read_text()
        used |= _optional_modules(ast.parse(text))
        if "importorskip" in text or re.search(r"skipif\([^)]*(find_spec|_available\(\))", text):
            old_style.append(path.name)  # such a skip never fails in CI
    assert {"ffcv", "foolbox", "mlxtend", "onnxruntime"} <= used
    assert used <= promised, f"CI does not promise {sorted(used - promised)}: add them to .ci/setup and .ci/run"
    assert not old_style, f"skip on a missing package through helpers.require_optional, not in {old_style}"
