"""Settings declared once: a dataclass field carries its help, choices and default, and the
command-line flags, config files (`--config FILE`, YAML or JSON) and recorded run settings all
derive from it.

    @dataclass(frozen=True)
    class TrainConfig:
        lr: float = option(1e-3, help="peak learning rate")
        schedule: str = option("cosine", help="LR schedule", choices=SCHEDULES)

    add_options(parser, TrainConfig, path="train")     # --lr, --schedule (dest "train.lr" ...)
    config = apply_changes(base, given_options(args))   # only the flags the user gave

Flags are added with `argparse.SUPPRESS` defaults, so the parsed namespace holds exactly what the
user typed; the defaults shown in `--help` come from the command's base settings (the field's
default, or a stage's preset). A settings object is then: base <- config file <- flags.

One spec grammar serves connectors, objectives and unlock settings, `NAME[:ARG][,KEY=VALUE...]`
(`qformer:num_queries=32`, `sea:0.5,labels=cache/`, `first:16`), and one coercion function
(`coerce`) turns CLI strings and JSON values into a field's annotated type.

Torch-free: the top-level CLI and `--help` use it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, Union

from modalign.errors import ConfigError

__all__ = [
    "SpecParts",
    "add_config_option",
    "add_options",
    "apply_changes",
    "check_choices",
    "coerce",
    "from_mapping",
    "given_options",
    "keyword_changes",
    "keyword_paths",
    "load_config",
    "merge_config",
    "option",
    "option_like",
    "parse_spec",
    "settings_from",
    "spec_from",
    "split_config",
    "to_dict",
]

# ---------------------------------------------------------------------------- spec grammar


@dataclasses.dataclass(frozen=True)
class SpecParts:
    """A parsed `NAME[:ARG][,KEY=VALUE...]`: the name, the positional argument (a weight, a
    layer number) and the options as raw strings, in the order given."""

    name: str
    arg: str | None = None
    options: tuple[tuple[str, str], ...] = ()


def parse_spec(text: Any, what: str, *, positional: bool = True) -> SpecParts:
    """Split a spec string; a first `KEY=VALUE` may follow the colon (`qformer:num_queries=32`).
    `positional=False`: the kind takes no ARG, so all after the colon are options.

    >>> parse_spec("sea:0.5,labels=cache/", "objective")
    SpecParts(name='sea', arg='0.5', options=(('labels', 'cache/'),))
    >>> parse_spec("qformer:num_queries=32,text_input=none", "connector").options
    (('num_queries', '32'), ('text_input', 'none'))
    """
    if not isinstance(text, str):
        raise ConfigError(f"{what} spec must be a string, got {type(text).__name__}")
    head, *rest = (part.strip() for part in text.strip().split(","))
    name, _, after = head.partition(":")
    name, after = name.strip(), after.strip()
    if not name:
        raise ConfigError(f"{what} spec {text!r}: the name must be a non-empty string")
    arg = None
    if "=" in after or (after and not positional):
        rest.insert(0, after)
    elif after:
        arg = after
    options: dict[str, str] = {}
    for item in filter(None, rest):
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"{what} spec {text!r}: {item!r} is not key=value (form: NAME[:ARG][,KEY=VALUE...])"
            )
        if key in options:
            raise ConfigError(f"{what} spec {text!r}: option {key!r} given twice")
        options[key] = value.strip()
    return SpecParts(name, arg, tuple(options.items()))


def spec_from(
    cls: type, value: Any, what: str, from_dict: Callable[[Any], Any] | None = None
) -> Any:
    """A spec (a class with `parse`) from itself, its CLI string (`cls.parse`) or its recorded
    mapping (`from_dict`, default `from_mapping`): the one `coerce` of every spec class."""
    if isinstance(value, cls):
        return value
    if isinstance(value, str):
        return cls.parse(value)
    if isinstance(value, Mapping):
        return from_dict(value) if from_dict is not None else from_mapping(cls, value, what)
    raise ConfigError(f"cannot make a {what} spec from {type(value).__name__}")


# ---------------------------------------------------------------------------- coercion

_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off")


def coerce(value: Any, tp: Any, where: str) -> Any:
    """`value` (a CLI string or a JSON value) as the annotated type `tp`; ConfigError if it does
    not fit. Handles Optional/Union, Literal, bool, int, float, str, Path, tuple[X, ...],
    dict[str, X], dataclasses (from a mapping) and classes with a `coerce` classmethod (specs).

    >>> coerce("3", int | None, "--steps"), coerce("none", int | None, "--steps")
    (3, None)
    >>> coerce(["a", "b"], tuple[str, ...], "--report-to")
    ('a', 'b')
    """
    origin = typing.get_origin(tp)
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        args = typing.get_args(tp)
        if type(None) in args and (
            value is None or (isinstance(value, str) and value.strip().lower() in ("none", "null"))
        ):
            return None
        inner = [a for a in args if a is not type(None)]
        errors = []
        for option_tp in inner:
            try:
                return coerce(value, option_tp, where)
            except ConfigError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices:
            raise ConfigError(f"{where}: {value!r} is not one of: {', '.join(map(str, choices))}")
        return value
    if origin in (tuple, list, Sequence):
        args = typing.get_args(tp)
        if isinstance(value, str | bytes) or not isinstance(value, Sequence | tuple | list):
            value = [value]
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: (str, Any)
            if len(value) != len(args):
                raise ConfigError(f"{where}: expected {len(args)} values, got {value!r}")
            return tuple(
                coerce(v, a, f"{where}[{i}]")
                for i, (v, a) in enumerate(zip(value, args, strict=True))
            )
        item_tp = args[0] if args else Any
        items = [coerce(v, item_tp, f"{where}[{i}]") for i, v in enumerate(value)]
        return tuple(items) if origin is not list else items
    if origin in (dict, Mapping):
        key_tp, val_tp = typing.get_args(tp) or (str, Any)
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return {
            coerce(k, key_tp, where): coerce(v, val_tp, f"{where}.{k}") for k, v in value.items()
        }
    if isinstance(tp, type) and hasattr(tp, "coerce") and not isinstance(value, tp):
        return tp.coerce(value)  # specs: from their CLI string or recorded form
    if isinstance(tp, type) and dataclasses.is_dataclass(tp) and not isinstance(value, tp):
        if not isinstance(value, Mapping):
            raise ConfigError(
                f"{where}: expected a mapping of {tp.__name__} settings, got {value!r}"
            )
        return from_mapping(tp, value, where)
    if (
        isinstance(tp, type)
        and isinstance(value, tp)
        and not (tp in (int, float) and isinstance(value, bool))
    ):
        return value
    bad = ConfigError(f"{where}: {value!r} is not a valid {getattr(tp, '__name__', tp)}")
    if tp is bool:
        if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
            return value.strip().lower() in _TRUE
        raise bad
    if tp in (int, float):
        if isinstance(value, bool):
            raise bad
        if isinstance(value, str):
            try:
                return tp(value.strip())
            except ValueError:
                raise bad from None
        if isinstance(value, int) or (tp is float and isinstance(value, float)):
            return tp(value)
        if tp is int and isinstance(value, float) and value.is_integer():
            return int(value)
        raise bad
    if tp is str:
        if isinstance(value, str):
            return value
        raise bad
    if tp is Path:
        if isinstance(value, str):
            return Path(value)
        raise bad
    raise TypeError(f"{where}: unsupported settings type {tp!r}")


# ---------------------------------------------------------------------------- declaring


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    flag: str | None = None,
    choices: Sequence[Any] | None = None,
    metavar: str | None = None,
    negate: bool = False,
    prefix: str | None = None,
    keys: Sequence[str] | None = None,
    sep: str | None = None,
    aliases: Mapping[str, Any] | None = None,
    enables: bool = False,
    other_flags: Sequence[str] = (),
    cli: bool = True,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with what the CLI needs to know about it.

    Args:
        default / default_factory: as `dataclasses.field`.
        help: one line for `--help` (the default is appended there).
        flag: the flag's name (default `--field-name`, after the parent's `prefix`).
        choices: allowed values (also checked when the settings are built).
        metavar: the value's name in `--help`.
        negate: a boolean flag that sets the field to False (`--quiet` for `progress`).
        prefix: for a nested settings field: prepended to its fields' flags (`lora-` -> `--lora-r`).
        keys: for a `dict[str, X]` field: one flag per key, `flag` being a pattern with `{key}`.
        sep: for a tuple field: one flag whose value is split at `sep` (`--cognition pixel,vq`)
            instead of a repeatable flag.
        aliases: words the flag also accepts and the values they stand for (`newline` for a
            line break).
        enables: in an optional group of settings (None unless asked for), the field whose flag
            switches the group on; the group's other flags alone are refused.
        other_flags: further names of the flag (`--num-samples` beside `--n`).
        cli: False keeps the field out of the command line (config files still set it).
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices else None,
            "metavar": metavar, "negate": negate, "prefix": prefix,
            "keys": tuple(keys) if keys else None, "sep": sep, "aliases": dict(aliases or {}),
            "enables": enables, "other_flags": tuple(other_flags), "cli": cli}  # fmt: skip
    return dataclasses.field(default=default, default_factory=default_factory, metadata=meta)


def option_like(cls: type, name: str, **changes: Any) -> Any:
    """A field declared as field `name` of dataclass `cls`, with `changes` to its `option`
    arguments (another default, help...): one declaration shared by two settings classes.

    >>> @dataclasses.dataclass
    ... class A:
    ...     n: int = option(100, help="number of pairs", other_flags=("--num-samples",))
    >>> @dataclasses.dataclass
    ... class B:
    ...     n: int = option_like(A, "n", default=8)
    >>> B().n, dataclasses.fields(B)[0].metadata["other_flags"]
    (8, ('--num-samples',))
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    if name not in fields:
        raise ConfigError(f"{cls.__name__} has no setting {name!r}")
    f = fields[name]
    kwargs: dict[str, Any] = {k: v for k, v in f.metadata.items() if k in _OPTION_ARGS}
    kwargs["default"], kwargs["default_factory"] = f.default, f.default_factory
    if "default" in changes or "default_factory" in changes:
        kwargs["default"] = kwargs["default_factory"] = dataclasses.MISSING
    kwargs.update(changes)
    return option(**kwargs)


_OPTION_ARGS = ("help", "flag", "choices", "metavar", "negate", "prefix", "keys", "sep",
                "aliases", "enables", "other_flags", "cli")  # fmt: skip


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _nested(tp: Any) -> type | None:
    """The dataclass type of a field (also inside Optional), else None."""
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        tp = inner[0] if len(inner) == 1 else None
    return tp if isinstance(tp, type) and dataclasses.is_dataclass(tp) else None


def _flag_name(f: dataclasses.Field, prefix: str) -> str:
    return f.metadata.get("flag") or "--" + prefix + f.name.replace("_", "-")


def _show(value: Any) -> str:
    if isinstance(value, tuple | list):
        return " ".join(map(str, value)) or "none"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def add_options(
    parser: argparse.ArgumentParser | Any,
    cls: type,
    *,
    path: str = "",
    defaults: Any = None,
    only: Sequence[str] | None = None,
    skip: Sequence[str] = (),
    prefix: str = "",
    title: str | None = None,
) -> None:
    """Add a flag for every CLI field of dataclass `cls`; nested settings recursively, each
    group of them under its own heading in `--help` (the parent field's help).

    Args:
        parser: a parser (or an argument group: then no headings are made).
        path: dotted prefix of the namespace destinations (`train` -> dest `train.lr`).
        defaults: the command's base settings (an instance of `cls`), for the defaults shown in
            `--help`; default: the fields' own defaults. None inside an optional group that
            the base leaves off.
        only / skip: field names to include / leave out (at this level).
        prefix: prepended to the flags of this level.
        title: the heading of this level's own flags (default: no heading).
    """
    hints = _hints(cls)
    chosen = [f for f in dataclasses.fields(cls) if f.metadata.get("cli", False)
              and f.name not in skip and (not only or f.name in only)]  # fmt: skip
    can_group = isinstance(parser, argparse.ArgumentParser)
    leaves = [f for f in chosen if _nested(hints[f.name]) is None]
    if leaves:
        target = parser.add_argument_group(title) if title and can_group else parser
        for f in leaves:
            shown = getattr(defaults, f.name) if defaults is not None else _field_default(f)
            if defaults is None and f.metadata.get("enables"):
                shown = None  # the group is off unless this flag is given
            dest = f"{path}.{f.name}" if path else f.name
            _add_flag(target, f, hints[f.name], dest, prefix, shown)
    for f in chosen:
        nested = _nested(hints[f.name])
        if nested is None:
            continue
        sub = getattr(defaults, f.name) if defaults is not None else None
        add_options(parser, nested, path=f"{path}.{f.name}" if path else f.name,
                    defaults=sub if dataclasses.is_dataclass(sub) else None,
                    prefix=prefix + (f.metadata.get("prefix") or ""),
                    title=f.metadata["help"])  # fmt: skip


def _field_default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _add_flag(
    parser: Any, f: dataclasses.Field, tp: Any, dest: str, prefix: str, shown: Any
) -> None:
    meta = f.metadata
    help_text = meta["help"]
    if meta.get("keys"):  # dict[str, X]: one flag per key
        item_tp = (typing.get_args(tp) or (str, Any))[1]
        pattern = meta.get("flag") or "--" + prefix + f.name.replace("_", "-") + "-{key}"
        for key in meta["keys"]:
            parser.add_argument(
                pattern.format(key=key), dest=f"{dest}.{key}", default=argparse.SUPPRESS,
                type=_converter(item_tp, pattern.format(key=key), meta), metavar="LR",
                help=help_text.format(key=key),
            )  # fmt: skip
        return
    flag = _flag_name(f, prefix)
    kwargs: dict[str, Any] = {"dest": dest, "default": argparse.SUPPRESS}
    shown = {v: k for k, v in meta.get("aliases", {}).items()}.get(shown, shown)
    base_tp = tp
    if typing.get_origin(tp) in (Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        base_tp = inner[0] if len(inner) == 1 else tp
    if base_tp is bool:
        kwargs["action"] = "store_const"
        kwargs["const"] = not meta.get("negate")
        shown_text = ""
    elif typing.get_origin(base_tp) in (tuple, list) and not meta.get("sep"):
        item_tp = typing.get_args(base_tp)[0]
        kwargs["action"] = "append"
        kwargs["type"] = _converter(item_tp, flag, meta)
        shown_text = f" (repeatable; default: {_show(shown)})" if shown else " (repeatable)"
    else:
        kwargs["type"] = _converter(tp, flag, meta)
        shown_text = f" (default: {_show(shown)})" if shown is not None else ""
    if meta.get("choices"):
        kwargs["choices"] = meta["choices"]
    if meta.get("metavar"):
        kwargs["metavar"] = meta["metavar"]
    elif base_tp is not bool and not meta.get("choices"):  # not the dotted destination
        kwargs["metavar"] = flag.lstrip("-").upper().replace("-", "_")
    kwargs["help"] = help_text + (shown_text if "(default" not in help_text else "")
    parser.add_argument(flag, *meta.get("other_flags", ()), **kwargs)


class _Refused:
    """A flag value the coercion refused; `given_options` raises its message as a ConfigError
    (one line, exit 2, like every user error) instead of argparse's usage screen."""

    def __init__(self, message: str) -> None:
        self.message = message

    def __repr__(self) -> str:
        return self.message


def _converter(tp: Any, flag: str, meta: Mapping[str, Any] | None = None) -> Callable[[str], Any]:
    """argparse `type=`: the one coercion, after the field's aliases and separator."""
    meta = meta or {}

    def convert(text: str) -> Any:
        value: Any = meta.get("aliases", {}).get(text, text)
        if meta.get("sep") and isinstance(value, str):
            value = [part.strip() for part in value.split(meta["sep"]) if part.strip()]
        try:
            return _coerce_field(value, tp, meta.get("choices"), flag)
        except ConfigError as exc:
            return _Refused(str(exc))

    convert.__name__ = getattr(tp, "__name__", "value")
    return convert


def keyword_paths(cls: type, path: str) -> dict[str, argparse.Action]:
    """The settings of dataclass `cls` by the names of their flags, as Python keywords
    (`--lora-r` -> `lora_r`), each with its flag's action (destination, converter, negation):
    how a function takes the same settings as the command line (`modalign.train(..., lora_r=8)`)."""
    parser = argparse.ArgumentParser(add_help=False)
    add_options(parser, cls, path=path)
    return {flag.lstrip("-").replace("-", "_"): action
            for action in parser._actions for flag in action.option_strings}  # fmt: skip


def keyword_changes(
    keywords: Mapping[str, Any], actions: Mapping[str, argparse.Action], path: str, where: str
) -> dict[str, Any]:
    """`keywords` (flag names as Python keywords) as the dotted changes below `path` their flags
    would make: strings go through the flag's own converter (aliases, separators), a switch
    such as `quiet=True` sets what `--quiet` sets; unknown names are a ConfigError."""
    unknown = sorted(set(keywords) - set(actions))
    if unknown:
        raise ConfigError(f"{where}: unknown setting(s) {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(actions))}")  # fmt: skip
    start = f"{path}."
    changes: dict[str, Any] = {}
    for key, value in keywords.items():
        action = actions[key]
        if not action.dest.startswith(start):
            continue
        if isinstance(action, argparse._StoreConstAction):
            value = action.const if value else not action.const
        elif isinstance(action, argparse._AppendAction):
            items = value if isinstance(value, list | tuple) else [value]
            value = [action.type(v) if isinstance(v, str) and action.type else v for v in items]
        elif isinstance(value, str) and action.type is not None:
            value = action.type(value)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, _Refused):
                raise ConfigError(item.message)
        changes[action.dest[len(start) :]] = value
    return changes


# ---------------------------------------------------------------------------- building


def given_options(namespace: argparse.Namespace, path: str) -> dict[str, Any]:
    """The settings under `path` that the user set on the command line, by dotted name below it:
    `given_options(args, "recipe")` -> {"train.lr": 0.01, "stage.unlock.llm": "lora"}."""
    start = f"{path}."
    out = {k[len(start) :]: v for k, v in vars(namespace).items() if k.startswith(start)}
    for value in out.values():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, _Refused):
                raise ConfigError(item.message)
    return out


def apply_changes(settings: Any, changes: Mapping[str, Any]) -> Any:
    """A copy of dataclass `settings` with dotted-path `changes` applied (nested dataclasses and
    dict entries included); every value is coerced to its field's type and validated."""
    grouped: dict[str, dict[str, Any]] = {}
    direct: dict[str, Any] = {}
    for key, value in changes.items():
        head, dot, rest = key.partition(".")
        if dot:
            grouped.setdefault(head, {})[rest] = value
        else:
            direct[head] = value
    hints = _hints(type(settings))
    fields = {f.name: f for f in dataclasses.fields(settings)}
    updates = {}
    for name in set(direct) | set(grouped):
        if name not in fields:
            raise ConfigError(f"{type(settings).__name__} has no setting {name!r}")
        current = getattr(settings, name)
        if name in grouped:
            nested = _nested(hints[name])
            if dataclasses.is_dataclass(current):
                current = apply_changes(current, grouped[name])
            elif nested is not None and current is None:  # an optional group, now switched on
                current = _create(nested, grouped[name], name)
            elif isinstance(current, Mapping) or current is None:
                current = {**(current or {}), **grouped[name]}
            else:
                raise ConfigError(f"{name} is not a group of settings")
        if name in direct:
            current = direct[name]
        value = _coerce_field(current, hints[name], fields[name].metadata.get("choices"), name)
        updates[name] = _checked(value, fields[name], name)
    return dataclasses.replace(settings, **updates)


def _create(cls: type, changes: Mapping[str, Any], where: str) -> Any:
    """A new `cls` from dotted changes (its required fields among them)."""
    flat = {k: v for k, v in changes.items() if "." not in k}
    required = [f.name for f in dataclasses.fields(cls) if f.metadata.get("enables") or (
                f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING)]  # fmt: skip
    missing = [n for n in required if n not in flat]
    if missing:
        flags = ", ".join(_flag_name(f, "") for f in dataclasses.fields(cls) if f.name in missing)
        raise ConfigError(f"{where} settings need {flags} (given: {', '.join(changes)})")
    hints = _hints(cls)
    made = cls(**{k: coerce(v, hints[k], f"{where}.{k}") for k, v in flat.items()})
    nested = {k: v for k, v in changes.items() if "." in k}
    return apply_changes(made, nested) if nested else made


def _coerce_field(value: Any, tp: Any, choices: Sequence[Any] | None, where: str) -> Any:
    """`coerce`, except that a value among the field's choices is that choice (an outlier mode
    named 'none' is not None)."""
    if choices and isinstance(value, str) and value in choices:
        return value
    return coerce(value, tp, where)


def check_choices(settings: Any) -> None:
    """Refuse (ConfigError) a field of dataclass `settings` whose value is not one of its
    declared `choices` (None passes): for `__post_init__`, so code that builds settings
    directly is checked as flags and config files are."""
    for f in dataclasses.fields(settings):
        _checked(getattr(settings, f.name), f, f.name)


def _checked(value: Any, f: dataclasses.Field, where: str) -> Any:
    choices = f.metadata.get("choices")
    if choices and value not in choices and value is not None:
        raise ConfigError(f"{where}: {value!r} is not one of: {', '.join(map(str, choices))}")
    return value


def from_mapping(cls: type, data: Mapping[str, Any], where: str = "", *, base: Any = None) -> Any:
    """An instance of dataclass `cls` from a (JSON/YAML) mapping, fields missing from `data`
    taken from `base` (or the field defaults); unknown keys are refused with one line."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = _hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"unknown {where or cls.__name__} option(s) {', '.join(unknown)}; "
            f"known: {', '.join(fields)}"
        )
    values = {}
    for name, f in fields.items():
        sub = f"{where}.{name}" if where else name
        if name not in data:
            if base is not None:
                values[name] = getattr(base, name)
            continue
        raw = data[name]
        nested = _nested(hints[name])
        current = getattr(base, name) if base is not None else None
        if nested is not None and isinstance(raw, Mapping):
            values[name] = from_mapping(nested, raw, sub, base=current)
        else:
            value = _coerce_field(raw, hints[name], f.metadata.get("choices"), sub)
            values[name] = _checked(value, f, sub)
    missing = [f for n, f in fields.items() if n not in values and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]  # fmt: skip
    if missing:
        what = ", ".join(f"{f.name} ({_flag_name(f, '')})" for f in missing)
        raise ConfigError(f"{where or cls.__name__}: missing setting(s) {what}")
    return cls(**values)


def to_dict(settings: Any) -> Any:
    """The JSON form of settings: dataclasses as mappings (their own `to_dict` where they have
    one), tuples as lists, paths as strings; `from_mapping` reads it back."""
    if hasattr(settings, "to_dict") and not isinstance(settings, type):
        return json.loads(json.dumps(settings.to_dict(), default=str))
    if dataclasses.is_dataclass(settings) and not isinstance(settings, type):
        return {f.name: to_dict(getattr(settings, f.name)) for f in dataclasses.fields(settings)}
    if isinstance(settings, tuple | list):
        return [to_dict(v) for v in settings]
    if isinstance(settings, Mapping):
        return {str(k): to_dict(v) for k, v in settings.items()}
    if isinstance(settings, Path):
        return str(settings)
    return settings


# ---------------------------------------------------------------------------- config files


def load_config(path: str | Path) -> dict[str, Any]:
    """A settings mapping from a YAML or JSON file (`.yaml`/`.yml` need PyYAML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"--config {path}: not a UTF-8 text file") from None
    if path.suffix.lower() in (".yaml", ".yml"):
        try:
            import yaml
        except ImportError:
            raise ConfigError(
                f"--config {path}: YAML needs PyYAML (pip install pyyaml), or use JSON"
            ) from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"--config {path}: not valid YAML ({exc})") from None
    else:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--config {path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"--config {path}: expected a mapping of settings at the top")
    return data


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`override` deep-merged into `base` (nested mappings merged key by key)."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def add_config_option(parser: argparse.ArgumentParser | Any, keys: str | None = None) -> None:
    """`--config FILE`: settings from a YAML or JSON file, the flags given overriding it.
    `keys`: how the file's keys are named (default: as the flags, with _ for -)."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help="settings from a YAML or JSON file (keys "
        + (keys or "as the flags' names, with _ for -")
        + "); flags given override it",
    )


def split_config(data: Mapping[str, Any], sections: Mapping[str, type]) -> dict[str, dict]:
    """A flat settings mapping (a config file) split by section: each key goes to every section
    (a dataclass) that has a field of that name; a key no section has is refused with one line.

    >>> @dataclasses.dataclass
    ... class Run:
    ...     n: int = 1
    >>> @dataclasses.dataclass
    ... class Data:
    ...     images: str = ""
    >>> split_config({"n": 5, "images": "imgs/"}, {"run": Run, "data": Data})
    {'run': {'n': 5}, 'data': {'images': 'imgs/'}}
    """
    names = {path: {f.name for f in dataclasses.fields(cls)} for path, cls in sections.items()}
    known = sorted(set().union(*names.values()))
    unknown = sorted(k for k in data if k not in known)
    if unknown:
        raise ConfigError(
            f"unknown setting(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}"
        )
    return {path: {k: v for k, v in data.items() if k in fields} for path, fields in names.items()}


def _nest(flat: Mapping[str, Any]) -> dict[str, Any]:
    """{"a.b": 1, "c": 2} -> {"a": {"b": 1}, "c": 2}."""
    out: dict[str, Any] = {}
    for key, value in flat.items():
        *heads, last = key.split(".")
        node = out
        for head in heads:
            node = node.setdefault(head, {})
        node[last] = value
    return out


def settings_from(
    cls: type,
    namespace: argparse.Namespace,
    path: str,
    *,
    config: Mapping[str, Any] | None = None,
    base: Any = None,
) -> Any:
    """Settings of dataclass `cls`: `base` (default: the field defaults) <- the `config` mapping
    <- the flags the user gave under `path` (see `add_options`); built once, so the dataclass's
    own checks see the final values.

    >>> @dataclasses.dataclass
    ... class Run:
    ...     n: int = option(100, help="pairs")
    ...     seed: int = option(0, help="seed")
    >>> args = argparse.Namespace(**{"run.seed": 3})
    >>> settings_from(Run, args, "run", config={"n": 7, "seed": 1})
    Run(n=7, seed=3)
    """
    data = merge_config(config or {}, _nest(given_options(namespace, path)))
    return from_mapping(cls, data, base=base)
