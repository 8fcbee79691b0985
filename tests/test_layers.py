"""Dependencies point one way: the library imports no script package, ``training`` and ``agents`` import only the
library, ``recipes`` (the one layer that chains both) and ``benchmarks`` sit on top, and nothing imports another
package's private names."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ALLOWED = {
    "dreamgym": {"dreamgym"},
    "training": {"dreamgym", "training"},
    "agents": {"dreamgym", "agents"},
    "recipes": {"dreamgym", "training", "agents", "recipes"},
    "benchmarks": {"dreamgym", "training", "agents", "benchmarks"},
}


def imports(path: Path) -> Iterator[tuple[int, str, list[str]]]:
    """(line, imported module, imported names) of every import in ``path``, relative ones made absolute.

    A relative import that climbs above its top-level package names a sibling package: the wheel carries the
    script packages beside each other under ``dreamgym`` (``from ..training import collect`` in recipes)."""
    package = list(path.relative_to(ROOT).with_suffix("").parts[:-1])
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name, []
        elif isinstance(node, ast.ImportFrom):
            names = [alias.name for alias in node.names]
            if node.level == 0:
                yield node.lineno, node.module or "", names
            elif node.level > len(package):
                yield node.lineno, node.module or "", names
            else:
                base = package[: len(package) - node.level + 1]
                yield node.lineno, ".".join(base + ([node.module] if node.module else [])), names


def sources(layer: str) -> list[Path]:
    return sorted(p for p in (ROOT / layer).rglob("*.py") if "pretrained" not in p.parts)


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_imports_point_down(layer: str) -> None:
    wrong = []
    for path in sources(layer):
        for line, module, names in imports(path):
            top = module.split(".")[0]
            if top in ALLOWED and top not in ALLOWED[layer]:
                wrong.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
            if top in ALLOWED and top != layer:
                wrong += [f"{path.relative_to(ROOT)}:{line} imports private {module}.{n}" for n in names
                          if n.startswith("_")]  # fmt: skip
    assert not wrong, "\n".join(wrong)


def test_relative_imports_resolve() -> None:
    """The checker itself: a recipe's wheel-layout import names the sibling package, a stage's names its own."""
    assert [n for _, m, n in imports(ROOT / "recipes" / "stages.py") if m == "training"][0][:2] == ["bundle", "collect"]
    assert any(m == "training.collect" for _, m, _ in imports(ROOT / "training" / "relabel.py"))
