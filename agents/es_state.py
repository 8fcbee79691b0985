"""pycma's ``CMAEvolutionStrategy`` state as plain data (a JSON tree + NumPy arrays), never a pickle.

:func:`es_to_plain` walks the ES's attributes (and those of the pycma objects it holds: sampler, step-size
adaptation, best solution, ...) and keeps every value that is plain data: numbers, strings, arrays and
lists / str-keyed dicts of them. Everything else (functions, the ``randn`` source, options, caches keyed
by tuples) is configuration that a fresh ``cma.CMAEvolutionStrategy(x0, sigma0, opts)`` with the same
options rebuilds. :func:`restore_es` writes the saved values into such a fresh ES, so it continues
exactly where the saved one stopped. Objects are never created from the file: the tree may only fill
attributes of objects the fresh ES already holds, of the same class, and may only replace plain values
(never options, functions or the ``randn`` source). A value shared by several attributes (e.g. the
sampler's ``C`` and the ES's) is shared again after restoring.
"""

from __future__ import annotations

import json
from typing import Any

import cma
import numpy as np

_SCALARS = (bool, int, float, str, type(None))
# pycma objects an ES creates after its constructor (its wall-clock timer, at the first ask): these, and
# only these, are made when the fresh ES has none yet.
_LAZY = {"ElapsedWCTime": cma.utilities.utils.ElapsedWCTime}


class ESStateError(ValueError):
    """A saved ES state does not fit this ES (corrupt, or written by another pycma version)."""


class _NotPlain(Exception):
    """Raised inside the encoder for a value the fresh ES rebuilds from its options."""


def _is_pycma_object(value: Any) -> bool:
    return (
        type(value).__module__.split(".")[0] == "cma"
        and not isinstance(value, (dict, list))
        and hasattr(value, "__dict__")
    )


class _Encoder:
    """Pre-order walk giving every array, container and object a node number; repeats become ``ref``s."""

    def __init__(self) -> None:
        self.arrays: list[np.ndarray] = []
        self.nodes: dict[int, int] = {}
        self.keep: list[Any] = []  # holds walked values alive so their ids stay unique

    def _number(self, value: Any) -> int | None:
        """The node number of an already walked ``value``, else None after numbering it."""
        if id(value) in self.nodes:
            return self.nodes[id(value)]
        self.nodes[id(value)] = len(self.nodes)
        self.keep.append(value)
        return None

    def _array(self, value: np.ndarray | np.generic) -> int:
        array = np.asarray(value)
        if array.dtype.hasobject:
            raise _NotPlain
        self.arrays.append(array.copy())
        return len(self.arrays) - 1

    def value(self, value: Any) -> Any:
        """JSON for a plain ``value``; raises :class:`_NotPlain` for anything else."""
        if type(value) in _SCALARS:
            return value
        if isinstance(value, np.generic):
            return {"scalar": self._array(value)}
        if type(value) not in (np.ndarray, list, tuple, dict):
            raise _NotPlain
        if type(value) is dict and not all(isinstance(key, str) for key in value):
            raise _NotPlain
        ref = self._number(value)
        if ref is not None:
            return {"ref": ref}
        if type(value) is np.ndarray:
            return {"array": self._array(value)}
        if type(value) is dict:
            return {"dict": {key: self.value(item) for key, item in value.items()}}
        return {type(value).__name__: [self.value(item) for item in value]}

    def attribute(self, value: Any) -> Any:
        """Like :meth:`value`, but a pycma object is walked into (only attributes hold objects)."""
        if not _is_pycma_object(value):
            return self.value(value)
        ref = self._number(value)
        if ref is not None:
            return {"ref": ref}
        return {"object": type(value).__qualname__, "attrs": self.attributes(value)}

    def attributes(self, obj: Any) -> dict[str, Any]:
        """The plain attributes of ``obj``; a value found not plain halfway is forgotten with its numbering."""
        encoded = {}
        for name, item in vars(obj).items():
            mark = len(self.arrays), len(self.nodes)
            try:
                encoded[name] = self.attribute(item)
            except _NotPlain:
                del self.arrays[mark[0] :], self.keep[mark[1] :]
                for key in list(self.nodes)[mark[1] :]:
                    del self.nodes[key]
        return encoded


def _is_plain(value: Any) -> bool:
    try:
        _Encoder().value(value)
    except _NotPlain:
        return False
    return True


class _Decoder:
    """Rebuilds the values of an :class:`_Encoder` tree in the same order, so node numbers match."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self.arrays = arrays
        self.nodes: list[Any] = []

    def _array(self, index: Any) -> np.ndarray:
        key = f"es_{index}"
        if key not in self.arrays:
            raise ESStateError(f"array {key} missing")
        return self.arrays[key]

    def value(self, node: Any, fresh: Any = None) -> Any:
        """The value of ``node``; ``fresh`` is the fresh ES's value at the same place (objects fill it)."""
        if not isinstance(node, dict):
            if isinstance(node, list):
                raise ESStateError("untagged list")
            return node
        if len(node) == 1 and "scalar" in node:
            return self._array(node["scalar"])[()]
        if len(node) == 1 and "ref" in node:
            if not isinstance(node["ref"], int) or not 0 <= node["ref"] < len(self.nodes):
                raise ESStateError(f"bad reference {node['ref']!r}")
            return self.nodes[node["ref"]]
        if "object" in node:
            if fresh is None and node["object"] in _LAZY:
                fresh = _LAZY[node["object"]]()
            if not _is_pycma_object(fresh) or type(fresh).__qualname__ != node["object"]:
                raise ESStateError(f"saved {node['object']} where this pycma has {type(fresh).__qualname__}")
            self.nodes.append(fresh)
            self.fill(fresh, node.get("attrs"))
            return fresh
        (kind, content), *rest = node.items()
        if rest:
            raise ESStateError(f"unknown node {sorted(node)}")
        if kind == "array":
            self.nodes.append(self._array(content).copy())
            return self.nodes[-1]
        if kind == "dict" and isinstance(content, dict):
            self.nodes.append({})
            self.nodes[-1].update({key: self.value(item) for key, item in content.items()})
            return self.nodes[-1]
        if kind in ("list", "tuple") and isinstance(content, list):
            index = len(self.nodes)
            self.nodes.append(None)  # a tuple exists only once its items do; nothing refers to it before
            self.nodes[index] = (list if kind == "list" else tuple)(self.value(item) for item in content)
            return self.nodes[index]
        raise ESStateError(f"unknown node {kind!r}")

    def fill(self, obj: Any, attrs: Any) -> None:
        if not isinstance(attrs, dict):
            raise ESStateError(f"attributes of {type(obj).__qualname__} missing")
        for name, node in attrs.items():
            fresh = getattr(obj, name, None)
            if name.startswith("__") or not (_is_pycma_object(fresh) or _is_plain(fresh)):
                raise ESStateError(f"{type(obj).__qualname__}.{name} is not ES state")
            setattr(obj, name, self.value(node, fresh))


def es_to_plain(es: cma.CMAEvolutionStrategy) -> dict[str, np.ndarray]:
    """The state of ``es`` as arrays for an npz: ``es_tree`` (JSON text) and ``es_0``, ``es_1``, ..."""
    encoder = _Encoder()
    encoder._number(es)
    tree = json.dumps(encoder.attributes(es))
    return {"es_tree": np.asarray(tree)} | {f"es_{i}": array for i, array in enumerate(encoder.arrays)}


def restore_es(fresh: cma.CMAEvolutionStrategy, arrays: dict[str, np.ndarray]) -> cma.CMAEvolutionStrategy:
    """Fills ``fresh`` (built with the saved run's x0, sigma0 and options) with the state of :func:`es_to_plain`.

    Raises :class:`ESStateError` when the arrays are not such a state or do not fit this pycma.
    """
    tree = arrays.get("es_tree")
    if tree is None or tree.dtype.kind != "U" or tree.shape != ():
        raise ESStateError("no es_tree text")
    decoder = _Decoder(arrays)
    decoder.nodes.append(fresh)
    try:
        decoder.fill(fresh, json.loads(str(tree)))
    except json.JSONDecodeError as err:
        raise ESStateError(f"es_tree is not JSON ({err})") from err
    except (AttributeError, TypeError, KeyError, IndexError, RecursionError) as err:
        raise ESStateError(f"malformed ES state ({type(err).__name__}: {err})") from err
    return fresh
