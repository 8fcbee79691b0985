"""Command lines from frozen ``Args`` dataclasses: one flag per field, the field's type and default."""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


def _parser_for(tp: Any) -> tuple[Any, bool]:
    """(argparse type, optional?) for a field annotation such as ``int``, ``float | None`` or ``bool``."""
    args = typing.get_args(tp)
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return inner, True
    return tp, False


def _to_bool(text: str) -> bool:
    if text.lower() in ("1", "true", "yes", "on"):
        return True
    if text.lower() in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_args(cls: type[T], argv: list[str] | None = None, description: str | None = None) -> T:
    """Parses ``argv`` into an instance of the dataclass ``cls`` (``--some-field VALUE`` per field).

    ``X | None`` fields also take ``none``; ``Literal`` fields take one of their values; fields without a
    default are required.
    """
    hints = typing.get_type_hints(cls)
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in dataclasses.fields(cls):
        kind, optional = _parser_for(hints[field.name])
        choices = typing.get_args(kind) if typing.get_origin(kind) is typing.Literal else None
        if choices:
            kind = type(choices[0])
        convert = _to_bool if kind is bool else kind
        if optional:
            base = convert
            convert = lambda text, base=base: None if text.lower() == "none" else base(text)  # noqa: E731
        has_factory = field.default_factory is not dataclasses.MISSING
        required = field.default is dataclasses.MISSING and not has_factory
        parser.add_argument(
            f"--{field.name.replace('_', '-')}",
            type=convert,
            choices=choices,
            required=required,
            default=field.default_factory() if has_factory else field.default,
            metavar="{" + ",".join(map(str, choices)) + "}" if choices else kind.__name__.upper(),
        )
    return cls(**vars(parser.parse_args(argv)))
