"""The library core never imports its tools (dreamgym.tools: command lines built on the core)."""

from __future__ import annotations

import ast
from pathlib import Path

CORE = Path(__file__).resolve().parent.parent / "dreamgym"


def imported_modules(path: Path) -> set[str]:
    modules = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            modules.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
            modules.update(f"{node.module}.{alias.name}" for alias in node.names)
    return modules


def test_the_core_imports_no_tool() -> None:
    core = [p for p in CORE.rglob("*.py") if "tools" not in p.relative_to(CORE).parts]
    wrong = [f"{p.relative_to(CORE.parent)} imports {m}" for p in core for m in sorted(imported_modules(p))
             if m == "dreamgym.tools" or m.startswith("dreamgym.tools.")]  # fmt: skip
    assert core and not wrong, "\n".join(wrong)
