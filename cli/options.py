"""Command-line options made from the settings model: one option per setting, with its flag, help
text, default and choices taken from :class:`pipeline.settings.MapSettings`, so a setting and its
default are written once and reach ``--help`` from there."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo


def flag(name: str) -> str:
    """The option of a setting: ``cell_size`` -> ``--cell-size``."""
    return "--" + name.replace("_", "-")


def _cli_type(annotation: Any) -> Any:
    """The type typer parses a setting as: str, int, float, bool, Path or a Literal's choices, Optional
    where the setting may be unset. Values reach the settings model as typed here; pydantic
    validates them there."""
    args = typing.get_args(annotation)
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    optional = union and type(None) in args
    inner = [a for a in args if a is not type(None)] if union else [annotation]
    base = inner[0] if len(inner) == 1 else str
    if base not in (str, int, float, bool, Path) and typing.get_origin(base) is not Literal:
        base = str
    return Optional[base] if optional else base


def option_for(name: str, field: FieldInfo) -> inspect.Parameter:
    """A keyword parameter whose default is the typer Option of setting ``name``."""
    annotation = _cli_type(field.annotation)
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    decls = [flag(name)]
    if annotation is bool:  # on/off pairs: --dense/--no-dense
        decls = [f"{flag(name)}/--no-{name.replace('_', '-')}"]
    option = typer.Option(
        field.default, *decls, help=field.description, metavar=extra.get("metavar"),
        show_default=field.default is not None,
    )
    return inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=option, annotation=annotation)


def with_settings(model: type[BaseModel], *, skip: tuple[str, ...] = ()) -> Callable[[Callable], Callable]:
    """Give a command one option per field of ``model`` (less ``skip``): the command receives them
    together as ``settings: dict`` (only those the user gave differ from the model's defaults)."""

    def decorate(command: Callable) -> Callable:
        hints = typing.get_type_hints(command)  # the command's own annotations, resolved in its module
        own = [p.replace(annotation=hints.get(name, p.annotation))
               for name, p in inspect.signature(command).parameters.items() if name != "settings"]
        names = [name for name in model.model_fields if name not in skip]
        options = [option_for(name, model.model_fields[name]) for name in names]

        @functools.wraps(command)
        def wrapper(**kwargs: Any) -> Any:
            settings = {name: kwargs.pop(name) for name in names}
            return command(settings=settings, **kwargs)

        wrapper.__signature__ = inspect.Signature(own + options)  # type: ignore[attr-defined]
        wrapper.__annotations__ = {p.name: p.annotation for p in own + options}
        del wrapper.__wrapped__  # typer reads the signature above, not the command's own
        return wrapper

    return decorate
