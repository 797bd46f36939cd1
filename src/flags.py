"""Command-line flags generated from the config dataclasses: a setting is declared once.

Each field of a config section becomes `--field-name` (underscores as hyphens), with the
field's docstring as its help and its default shown; the value travels as text and is
converted and checked by `config.apply_overrides`, so a flag, a TOML key and
`--set section.key=value` are one setting with one set of rules. Booleans get
`--name/--no-name`; `Literal` fields list their choices.

A few flag names changed when the commands were unified; `alias()` keeps an old name
working and logs a one-line note naming the new one.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import inspect
import logging
import sys
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args, get_origin, get_type_hints

log = logging.getLogger(__name__)


@cache
def _module_docs(module_name: str) -> dict[str, dict[str, str]]:
    """`class -> field -> its docstring, white space folded` for every class of a module.

    One parse of the module's source (`inspect.getsource` on each class would re-parse
    the whole module per class: most of `--help`'s start-up).
    """
    source = Path(inspect.getfile(sys.modules[module_name])).read_text(encoding="utf-8")
    out: dict[str, dict[str, str]] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        docs = out.setdefault(node.name, {})
        for field, after in zip(node.body, node.body[1:], strict=False):
            if (
                isinstance(field, ast.AnnAssign)
                and isinstance(field.target, ast.Name)
                and isinstance(after, ast.Expr)
                and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)
            ):
                docs[field.target.id] = " ".join(after.value.value.split())
    return out


def field_docs(cls: type) -> dict[str, str]:
    """`field -> its docstring` (the string literal under the field), white space folded."""
    return _module_docs(cls.__module__).get(cls.__name__, {})


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def _choices(hint: Any) -> tuple[str, ...] | None:
    for t in (hint, *get_args(hint)):
        if get_origin(t) is Literal:
            return tuple(str(a) for a in get_args(t))
    return None


def _is_bool(hint: Any) -> bool:
    return hint is bool or (bool in get_args(hint) and get_origin(hint) is not Literal)


def add_config_flags(
    parser: argparse.ArgumentParser,
    config: Any,
    sections: dict[str, tuple[str, ...] | None],
    dests: dict[str, tuple[str, str]],
) -> None:
    """Add a flag for each field of `sections` of `config` (an instance: its values are
    the defaults shown in the help).

    `sections`: section name -> the fields to expose (None: all), one argument group per
    section. `dests` receives `argparse dest -> (section, field)`, for `overrides_from`.
    """
    for section, only in sections.items():
        obj = getattr(config, section)
        cls = type(obj)
        hints, docs = get_type_hints(cls), field_docs(cls)
        group = parser.add_argument_group(f"[{section}] settings")
        for f in dataclasses.fields(obj):
            if only is not None and f.name not in only:
                continue
            default = getattr(obj, f.name)
            shown = ",".join(map(str, default)) if isinstance(default, tuple) else default
            text = f"{docs.get(f.name, '')} (default: {shown})".replace("%", "%%")
            hint = hints[f.name]
            if _is_bool(hint):
                group.add_argument(
                    flag_name(f.name), action=argparse.BooleanOptionalAction, help=text
                )
            else:
                choices = _choices(hint)
                metavar = "{" + ",".join(choices) + "}" if choices else f.name.upper()
                group.add_argument(flag_name(f.name), metavar=metavar, help=text)
            dests[f.name] = (section, f.name)


def overrides_from(
    args: argparse.Namespace, dests: dict[str, tuple[str, str]]
) -> dict[str, dict[str, Any]]:
    """`section -> field -> value` for every generated flag the user gave."""
    out: dict[str, dict[str, Any]] = {}
    for dest, (section, name) in dests.items():
        value = getattr(args, dest, None)
        if value is not None:
            out.setdefault(section, {})[name] = value
    return out


def parse_set(items: list[str]) -> dict[str, dict[str, Any]]:
    """`["train.lr=1e-3", ...]` -> `{"train": {"lr": "1e-3"}}`; ValueError on bad shape."""
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, value = item.partition("=")
        section, dot, name = key.partition(".")
        if not sep or not dot or not section or not name:
            raise ValueError(f"--set expects SECTION.KEY=VALUE, got {item!r}")
        out.setdefault(section, {})[name] = value
    return out


def flag_for_error(message: str, dests: dict[str, tuple[str, str]], given: Any) -> str:
    """Name the flag the user typed in a config error that names `section.field`."""
    for dest, (section, name) in dests.items():
        if getattr(given, dest, None) is not None and message.startswith(f"{section}.{name} "):
            return f"{flag_name(dest)}: {message}"
    return message


class ConfigFlags:
    """The generated flags of some config sections on one parser, and the Config they make.

    `sections`: section -> fields to expose (None: all), as for `add_config_flags`;
    `base`: the config whose values the help shows as defaults.
    """

    def __init__(self, parser: argparse.ArgumentParser, sections: dict, base: Any) -> None:
        self.base = base
        self.dests: dict[str, tuple[str, str]] = {}
        add_config_flags(parser, base, sections, self.dests)

    def config(self, args: argparse.Namespace, make: Any = None) -> Any:
        """`make(overrides)` (default: `base` with the flags applied); a bad value is a
        `UserError` naming the flag the user typed."""
        from src.config import apply_overrides
        from src.core.errors import UserError

        try:
            overrides = overrides_from(args, self.dests)
            if make is None:
                return apply_overrides(self.base, overrides, "command line")
            return make(overrides)
        except ValueError as err:
            raise UserError(flag_for_error(str(err), self.dests, args)) from None


class _Alias(argparse.Action):
    """An old flag name: stores into the new flag's destination and says the new name."""

    def __init__(self, option_strings: list[str], dest: str, new: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, **kwargs)
        self.new = new

    def __call__(self, parser: Any, namespace: Any, values: Any, option_string: Any = None):
        log.warning(f"{option_string} is now {self.new}; the old name still works for now")
        setattr(namespace, self.dest, values)


def alias(parser: argparse.ArgumentParser, old: str, new: str, **kwargs: Any) -> None:
    """Accept `old` as a hidden alias of the flag `new` (which must exist already)."""
    dest = new.lstrip("-").replace("-", "_")
    parser.add_argument(old, dest=dest, action=_Alias, new=new, help=argparse.SUPPRESS, **kwargs)
