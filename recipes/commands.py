"""The ``dreamgym`` command: ``dreamgym <command> [flags]`` runs one stage, agent, recipe or tool.

``dreamgym --help`` lists the commands, ``dreamgym <command> --help`` one command's flags; every command is the
``main(argv)`` of its module, so ``dreamgym collect ...`` equals ``python -m training.collect ...`` in a clone
(where ``python -m recipes.commands collect ...`` is this command).
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from . import PREFIX

SCRIPTS = (
    "recipes.pipeline", "training.collect", "training.vae", "training.encode", "training.mdnrnn", "training.bundle",
    "training.ship", "training.relabel", "training.fidelity", "training.refit_reward", "training.export_minari",
    "agents.cmaes", "agents.evaluate", "agents.imitate", "agents.ensemble", "agents.sb3_ppo", "recipes.dagger",
    "recipes.temperature_sweep",
)  # fmt: skip
"""script modules, named as in a clone (the wheel prefixes them with ``dreamgym.``)"""
TOOLS = ("dreamgym.tools.play", "dreamgym.tools.record", "dreamgym.tools.model_card")
"""library modules with a command line"""
COMMANDS = {m.rpartition(".")[2].replace("_", "-"): m for m in (*(PREFIX + s for s in SCRIPTS), *TOOLS)}
"""command name (the module's own, ``export_minari`` -> ``export-minari``) -> module whose ``main(argv)`` runs it"""


def summary(module: str) -> str:
    """The first line of ``module``'s docstring, read without importing it (``--help`` stays fast)."""
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise ModuleNotFoundError(f"no module {module}")
    docstring = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""
    return docstring.split("\n")[0]


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = [f"  {name:<{width}}  {summary(module)}" for name, module in COMMANDS.items()]
    return "usage: dreamgym <command> [flags]  (dreamgym <command> --help: its flags)\n\ncommands:\n" + "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs ``argv[0]``'s command with the rest of ``argv``; returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("-h", "--help"):
        print(usage())
        return 0
    if not args or args[0] not in COMMANDS:
        print(usage(), file=sys.stderr)
        print(f"\ndreamgym: {'no command given' if not args else f'unknown command {args[0]!r}'}", file=sys.stderr)
        return 2
    if argv is None:  # the console command: its flags' usage lines say `dreamgym <command>`, and as under
        sys.argv[0] = f"dreamgym {args[0]}"  # `python -m`, the working folder's modules import (--game mygames:SPEC)
        sys.path.insert(0, os.getcwd())
    status = importlib.import_module(COMMANDS[args[0]]).main(args[1:])
    return status if isinstance(status, int) else 0


if __name__ == "__main__":
    sys.exit(main())
