"""The wheel's packages: the library plus the script folders, carried as ``dreamgym.training``, ``dreamgym.agents``
and ``dreamgym.recipes`` so that an install adds no generic top-level name (the rest is in pyproject.toml)."""

from setuptools import find_packages, setup

SCRIPTS = ("training", "agents", "recipes")

setup(
    packages=find_packages(include=["dreamgym", "dreamgym.*"]) + [f"dreamgym.{name}" for name in SCRIPTS],
    package_dir={f"dreamgym.{name}": name for name in SCRIPTS},
)
