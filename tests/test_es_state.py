"""agents.es_state: pycma's ES as plain data that restores exactly and can only fill plain ES state."""

from __future__ import annotations

import json

import cma
import numpy as np
import pytest

from agents.cmaes import SeededNormal
from agents.es_state import ESStateError, es_to_plain, restore_es


def new_es(dim: int) -> cma.CMAEvolutionStrategy:
    options = {"popsize": 8, "seed": np.nan, "randn": SeededNormal(), "verbose": -9, "verb_log": 0, "verb_disp": 0}
    return cma.CMAEvolutionStrategy(np.zeros(dim), 0.1, options)


def generation(es: cma.CMAEvolutionStrategy, gen: int) -> list[float]:
    es.opts["randn"].reseed(0, gen)
    solutions = es.ask()
    costs = [float(np.sum((x - 1) ** 2) + np.sin(10 * x[0])) for x in solutions]
    es.tell(solutions, costs)
    return costs


@pytest.mark.parametrize(("dim", "before", "after"), [(3, 0, 5), (5, 3, 40), (40, 7, 60)])
def test_restored_es_continues_exactly(tmp_path, dim: int, before: int, after: int) -> None:
    """Many generations after a restore (covariance, step size and eigendecomposition schedule included)."""
    whole = new_es(dim)
    expected = [generation(whole, g) for g in range(before + after)]
    first = new_es(dim)
    got = [generation(first, g) for g in range(before)]
    np.savez(tmp_path / "es.npz", **es_to_plain(first))
    with np.load(tmp_path / "es.npz", allow_pickle=False) as saved:
        restored = restore_es(new_es(dim), dict(saved))
    got += [generation(restored, g) for g in range(before, before + after)]
    assert got == expected
    np.testing.assert_array_equal(restored.mean, whole.mean)
    assert restored.sigma == whole.sigma and restored.countevals == whole.countevals


def tampered(change: dict) -> dict[str, np.ndarray]:
    es = new_es(3)
    generation(es, 0)
    plain = es_to_plain(es)
    return plain | {"es_tree": np.asarray(json.dumps(json.loads(str(plain["es_tree"])) | change))}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"opts": {"dict": {"popsize": "__import__('os')"}}}, "opts is not ES state"),
        ({"integer_centering": "print"}, "integer_centering is not ES state"),
        ({"__class__": {"dict": {}}}, "__class__ is not ES state"),
        ({"sm": {"object": "SomethingElse", "attrs": {}}}, "saved SomethingElse where this pycma has GaussFullSampler"),
        ({"mean": {"array": 999}}, "array es_999 missing"),
        ({"mean": {"ref": 10**6}}, "bad reference"),
    ],
)
def test_a_tampered_tree_cannot_set_anything_but_plain_state(change: dict, message: str) -> None:
    with pytest.raises(ESStateError, match=message):
        restore_es(new_es(3), tampered(change))


def test_a_deeply_nested_tree_is_an_es_state_error() -> None:
    deep = {"es_tree": np.asarray('{"mean": ' + '{"list": [' * 5000 + "]}" * 5000 + "}")}
    with pytest.raises(ESStateError, match="RecursionError"):
        restore_es(new_es(3), deep)
