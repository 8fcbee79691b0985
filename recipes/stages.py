"""The stage and agent modules the recipes chain, imported from beside this package.

A clone has ``training``, ``agents`` and ``recipes`` as top-level packages (``python -m recipes.pipeline``); the
wheel carries them as ``dreamgym.training``, ``dreamgym.agents`` and ``dreamgym.recipes`` so that it installs no
generic top-level names (:data:`recipes.PREFIX`).
"""

from __future__ import annotations

from . import PREFIX

if PREFIX:  # the installed wheel
    from ..agents import cmaes, evaluate, imitate
    from ..training import bundle, collect, encode, mdnrnn, vae
else:  # a clone
    from agents import cmaes, evaluate, imitate
    from training import bundle, collect, encode, mdnrnn, vae

__all__ = ["bundle", "cmaes", "collect", "encode", "evaluate", "imitate", "mdnrnn", "vae"]
