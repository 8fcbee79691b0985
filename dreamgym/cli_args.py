"""Command lines from frozen ``Args`` dataclasses: one flag per field, the field's type and default.

A field annotated with a :class:`Bound` (``Positive``, ``Count``, ``Probability``, ...) is checked as its flag
is parsed, so a bad value exits 2 with ``argument --flag: must be ..., got ...`` before a script writes
anything.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import math
import sys
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class Bound:
    """The interval of values a numeric flag accepts; ``low_open`` / ``high_open`` exclude its ends."""

    low: float
    high: float = math.inf
    low_open: bool = False
    high_open: bool = False

    def check(self, value: float) -> None:
        """Raises ``argparse.ArgumentTypeError`` naming the interval when ``value`` is outside it."""
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        if above and below:
            return
        if self.high == math.inf:
            raise argparse.ArgumentTypeError(f"must be {'>' if self.low_open else '>='} {self.low:g}, got {value!r}")
        interval = f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"
        raise argparse.ArgumentTypeError(f"must be in {interval}, got {value!r}")


Count = Annotated[int, Bound(1)]
"""a number of things (episodes, epochs, workers, steps, a batch or layer size): >= 1"""
NonNegative = Annotated[int, Bound(0)]
"""a seed, or a size or period where 0 means none: >= 0"""
Positive = Annotated[float, Bound(0, low_open=True)]
"""a step size, learning rate, temperature or timeout: > 0"""
NonNegativeFloat = Annotated[float, Bound(0)]
"""a penalty, noise scale or tolerance: >= 0"""
Probability = Annotated[float, Bound(0, 1)]
"""a share or probability: in [0, 1]"""
HeldOut = Annotated[float, Bound(0, 1, high_open=True)]
"""a held-out fraction: in [0, 1)"""
DropRate = Annotated[float, Bound(0, 1, high_open=True)]
"""a dropout rate: in [0, 1)"""


def _parser_for(tp: Any) -> tuple[Any, bool, Bound | None]:
    """(argparse type, optional?, bound) for a field annotation such as ``int``, ``Count | None`` or ``bool``."""
    optional = False
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        tp, optional = [a for a in args if a is not type(None)][0], True
    if typing.get_origin(tp) is Annotated:
        tp, *extras = typing.get_args(tp)
        return tp, optional, next((e for e in extras if isinstance(e, Bound)), None)
    return tp, optional, None


def _to_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def _bounded(convert: Any, bound: Bound, name: str) -> Any:
    """``convert`` followed by ``bound.check``; named ``name`` so argparse's messages keep saying ``int``."""

    def parse(text: str) -> Any:
        value = convert(text)
        bound.check(value)
        return value

    parse.__name__ = name
    return parse


def _report_os_error(
    prog: str, kind: type[BaseException], error: BaseException, tb: types.TracebackType | None
) -> None:
    """A command line's uncaught ``OSError`` (disk full, ``--out`` not writable or a file) as one line naming the
    path; any other exception keeps Python's traceback. The exit status stays 1, and writes are atomic, so
    nothing partial is left."""
    if isinstance(error, OSError):
        where = f"{error.filename}: " if error.filename else ""
        print(f"{prog}: error: {where}{error.strerror or error}", file=sys.stderr)
    else:
        sys.__excepthook__(kind, error, tb)


def parse_args(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parses ``argv`` into an instance of the dataclass ``cls`` (``--some-field VALUE`` per field).

    ``X | None`` fields also take ``none``; ``Literal`` fields take one of their values; fields without a
    default are required; a value outside its field's :class:`Bound` exits 2 naming the flag.
    """
    hints = typing.get_type_hints(cls, include_extras=True)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    sys.excepthook = functools.partial(_report_os_error, parser.prog)
    for field in dataclasses.fields(typing.cast(Any, cls)):  # any dataclass
        kind, optional, bound = _parser_for(hints[field.name])
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else None
        if choices:
            kind = type(choices[0])
        convert = _to_bool if kind is bool else kind
        if bound is not None:
            convert = _bounded(convert, bound, kind.__name__)
        if optional:
            base = convert
            convert = lambda text, base=base: None if text.lower() == "none" else base(text)  # noqa: E731
        has_factory = callable(field.default_factory)
        required = field.default is dataclasses.MISSING and not has_factory
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=convert,
            choices=choices,
            required=required,
            default=field.default_factory() if callable(field.default_factory) else field.default,
            metavar="{" + ",".join(map(str, choices)) + "}" if choices else kind.__name__.upper(),
        )
    return cls(**vars(parser.parse_args(argv)))
