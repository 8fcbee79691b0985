"""Recipes: commands that chain world-model stages (``training``) and controller scripts (``agents``).

The one layer that imports both; the library (``dreamgym``) and the two script packages never import it.
"""

PREFIX = __name__.removesuffix("recipes")
"""What the script packages' names start with: ``""`` in a clone (top-level ``training``, ``agents``,
``recipes``), ``"dreamgym."`` in the installed wheel, which carries them under the library's name."""
