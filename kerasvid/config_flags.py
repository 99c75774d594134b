"""absl flags derived from config dataclasses, and the dataclass built back from the parsed flags.

One name per setting: the flag of a field has the field's name, its default and its type, and its help is the
field's entry in the `Attributes:` section of the class docstring (so `help(TrainConfig)` and `--helpfull` say
the same thing). Field types map to flags as follows:

| field type | flag | parsed back |
|---|---|---|
| `bool`, `int`, `float`, `str` | `DEFINE_bool/integer/float/string` | as is |
| `str` with `metadata["enum"]` | `DEFINE_enum` (the allowed values) | as is |
| `Tuple[int, ...]` / `Tuple[int, int]` | `DEFINE_list` (`--image_size=112,112`) | a tuple of ints (one value of a fixed-length tuple is repeated) |
| `Tuple[float, float]` | `DEFINE_list` (`--crop_scale=0.8,1`) | a tuple of floats (likewise) |
| `Dict` | `DEFINE_string` (`--model_kwargs=k=12,variant=released_code`) | `parse_kwargs`: values are Python literals |

A field with `metadata={"flag": False}` gets no flag (e.g. `TaskConfig.label_names`, read from labels.txt).

```python
flag_values = flags.FlagValues()
define_flags(TrainConfig, flag_values, defaults={"train_steps": 0})
flag_values(["prog", "--lr_schedule=cosine"])
config = from_flags(TrainConfig, flag_values, train_steps=100)  # keyword arguments override the flags
```

This module imports no TensorFlow.
"""
import dataclasses
import re
import typing

from absl import flags

from kerasvid.command_flags import parse_kwargs  # noqa: F401 - the flag language of every command, defined once

flags.disclaim_key_flags()  # the flags defined here belong to the module that calls define_flags (its --help)


def field_docs(config_cls):
    """`{field name: its text}` from the `Attributes:` section of the class docstring (Google style: `name: text`,
    continuation lines indented further)."""
    docs, name, indent, section = {}, None, None, False
    for line in (config_cls.__doc__ or "").splitlines():
        stripped = line.strip()
        if stripped == "Attributes:":
            section = True
            continue
        if not section:
            continue
        if not stripped:
            if docs:
                break
            continue
        depth = len(line) - len(line.lstrip())
        match = re.match(r"(\w+): (.*)", stripped)
        if match and (indent is None or depth == indent):
            indent, name = depth, match.group(1)
            docs[name] = match.group(2)
        elif name is not None and depth > indent:
            docs[name] += " " + stripped
        else:
            break
    return docs


def _kind(config_cls, field):
    """`("bool"|"int"|"float"|"str"|"enum"|"dict", None)` or `("tuple", length or None)` of a field (a tuple of
    ints, or a fixed-length tuple of floats)."""
    hint = typing.get_type_hints(config_cls)[field.name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if "enum" in field.metadata:
        return "enum", None
    if hint in (bool, int, float, str):
        return hint.__name__, None
    if origin in (dict, typing.Dict) or hint in (dict, typing.Dict):
        return "dict", None
    if origin is tuple and (all(a in (int, Ellipsis) for a in args) or all(a is float for a in args)):
        return "tuple", None if Ellipsis in args else len(args)
    raise TypeError(f"{config_cls.__name__}.{field.name}: no flag type for {hint!r}; give the field "
                    "metadata={'flag': False} and set it in code.")


def _flag_fields(config_cls, skip=()):
    return [f for f in dataclasses.fields(config_cls) if f.name not in skip and f.metadata.get("flag", True)]


def _default(field):
    if field.default is not dataclasses.MISSING:
        return field.default
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    raise TypeError(f"Field {field.name!r} has no default: a flag needs one.")


def define_flags(config_cls, flag_values=flags.FLAGS, *, defaults=None, skip=()):
    """Defines one absl flag per field of the dataclass `config_cls` (see the module docstring for the types).

    Args:
        config_cls: a dataclass whose docstring's `Attributes:` section documents every flag field.
        flag_values: the `flags.FlagValues` to define them in.
        defaults: `{field: value}` flag defaults that differ from the field's default (e.g. 0 = "not set").
        skip: fields that get no flag here (the caller defines its own flag of that name, or sets it in code).

    Returns:
        The names of the flags defined.
    """
    docs, defaults, names = field_docs(config_cls), dict(defaults or {}), []
    unknown = sorted(set(defaults) - {f.name for f in dataclasses.fields(config_cls)})
    if unknown:
        raise ValueError(f"defaults for {unknown}: {config_cls.__name__} has no such field.")
    for field in _flag_fields(config_cls, skip):
        if field.name not in docs:
            raise ValueError(f"{config_cls.__name__}.{field.name} has no entry in the Attributes section of the "
                             "class docstring (it is the flag's help).")
        kind, _ = _kind(config_cls, field)
        default = defaults.get(field.name, _default(field))
        help_ = docs[field.name]
        if kind == "enum":
            flags.DEFINE_enum(field.name, default, list(field.metadata["enum"]), help_, flag_values=flag_values)
        elif kind == "dict":
            if default:
                raise ValueError(f"{config_cls.__name__}.{field.name}: a dict flag defaults to empty.")
            flags.DEFINE_string(field.name, "", f"{help_} As a flag: `key=value,key=value` (Python literals; "
                                "bare words are strings).", flag_values=flag_values)
        elif kind == "tuple":
            flags.DEFINE_list(field.name, [str(v) for v in default], help_ + " (comma-separated)",
                              flag_values=flag_values)
        else:
            define = {"bool": flags.DEFINE_bool, "int": flags.DEFINE_integer, "float": flags.DEFINE_float,
                      "str": flags.DEFINE_string}[kind]
            define(field.name, default, help_, flag_values=flag_values)
        names.append(field.name)
    return names


def flag_value(config_cls, name, flag_values=flags.FLAGS):
    """The parsed flag of field `name`, converted to the field's type (ValueError naming the flag and value)."""
    field = next(f for f in dataclasses.fields(config_cls) if f.name == name)
    kind, length = _kind(config_cls, field)
    value = flag_values[name].value
    if kind == "dict":
        return parse_kwargs(value, name)
    if kind == "tuple":
        number = float if float in typing.get_args(typing.get_type_hints(config_cls)[name]) else int
        try:
            value = tuple(number(v) for v in value)
        except ValueError:
            raise ValueError(f"--{name} must be {'numbers' if number is float else 'integers'}, got "
                             f"{','.join(value)!r}.")
        if length and len(value) == 1:
            value = value * length
        if length and len(value) != length:
            raise ValueError(f"--{name} must be {length} integers, got {','.join(map(str, value))!r}.")
    return value


def from_flags(config_cls, flag_values=flags.FLAGS, *, skip=(), **values):
    """Builds `config_cls` from the parsed flags of its fields; `values` (already converted) override them, and
    fields in `skip` or without a flag take `values` or their default.

    Raises:
        ValueError: a flag value that does not convert (the message names the flag and the value).
    """
    kwargs = {f.name: flag_value(config_cls, f.name, flag_values) for f in _flag_fields(config_cls, skip)
              if f.name not in values}
    return config_cls(**kwargs, **values)
