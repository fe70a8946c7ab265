"""The configuration machinery: documented fields, validation, YAML rendering.

Every tunable value of the package is a field of a dataclass declared with :func:`param`,
which records its documentation and its validation rules. From those dataclasses the rest
is derived (see :mod:`panoptic_mapping.config` for the root): the params file, the ROS
parameters the node declares, and the validation of every file, dictionary or ROS
parameter set handed in, where an unknown key or a value of the wrong type raises
:class:`ConfigError` naming it.

Parameter names are dotted paths through the nested sections, e.g. ``input.sync_slop_s``;
the same path is the ROS parameter name and the nested YAML key.

This is the lowest layer of the package: it imports nothing of panoptic_mapping, so every
component can declare its configuration beside its code.
"""
from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

__all__ = [
    "ConfigError",
    "ParamSpec",
    "param",
    "param_specs",
    "validate_value",
    "validate_fields",
    "config_from_dict",
    "config_from_flat",
    "config_to_dict",
    "flatten",
    "load_config",
    "config_to_yaml",
    "ROS_BUILTIN_PARAMETERS",
]


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type or out of range.

    The message always names the offending key (its dotted path).
    """


def param(
    default: Any,
    doc: str,
    *,
    choices: tuple[Any, ...] | None = None,
    minimum: float | None = None,
    maximum: float | None = None,
    runtime: bool = False,
) -> Any:
    """Declare one documented configuration field.

    Args:
        default: the default value; lists are copied per instance.
        doc: one-sentence description, shown as the ROS parameter description and as the
            comment in ``config/mapping.yaml``.
        choices: allowed values, if the field is an enumeration.
        minimum, maximum: inclusive bounds for numbers.
        runtime: True if the running node accepts changes of this value
            (``ros2 param set``); all others are read-only after start-up.
    """
    metadata = {"doc": doc, "choices": choices, "minimum": minimum, "maximum": maximum,
                "runtime": runtime}
    if isinstance(default, list):
        return field(default_factory=lambda: list(default), metadata=metadata)
    return field(default=default, metadata=metadata)


# --------------------------------------------------------------------------- introspection


@dataclass(frozen=True)
class ParamSpec:
    """Everything known about one leaf parameter (derived from the dataclasses)."""

    name: str  # dotted path, e.g. "input.sync_slop_s"
    type: Any  # bool, int, float, str, list[str], list[int], list[float]
    default: Any
    doc: str
    choices: tuple[Any, ...] | None
    minimum: float | None
    maximum: float | None
    runtime: bool

    @property
    def type_name(self) -> str:
        return _type_name(self.type)


_SCALARS = (bool, int, float, str)


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        return f"list[{typing.get_args(tp)[0].__name__}]"
    return tp.__name__


def _is_section(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _field_types(cls: type) -> dict[str, Any]:
    # annotations are strings (PEP 563); each section's module names its sub-sections
    return typing.get_type_hints(cls)


def param_specs(cls: type, prefix: str = "",
                instance: Any = None) -> list[ParamSpec]:
    """All leaf parameters of a config class, depth first, in declaration order.

    Defaults come from a default-constructed instance, so a section whose parent sets
    other defaults for it (two hash grids of different sizes) reports the parent's.
    """
    instance = cls() if instance is None else instance
    specs: list[ParamSpec] = []
    hints = _field_types(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        name = prefix + f.name
        value = getattr(instance, f.name)
        if _is_section(tp):
            specs.extend(param_specs(tp, name + ".", value))
            continue
        if "doc" not in f.metadata:
            raise TypeError(f"config field '{name}' is not declared with param()")
        md = f.metadata
        specs.append(ParamSpec(name, tp, value, md["doc"], md["choices"], md["minimum"],
                               md["maximum"], md["runtime"]))
    return specs


# --------------------------------------------------------------------------- validation


def _check_value(spec_name: str, tp: Any, value: Any) -> Any:
    """Return ``value`` converted to ``tp`` or raise ConfigError naming ``spec_name``."""
    if typing.get_origin(tp) is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"parameter '{spec_name}' must be a {_type_name(tp)}, "
                              f"got {type(value).__name__} {value!r}")
        (elem,) = typing.get_args(tp)
        return [_check_value(f"{spec_name}[{i}]", elem, v) for i, v in enumerate(value)]
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # YAML writes 1 for 1.0; that is not a type error
    if tp is bool and not isinstance(value, bool):
        raise ConfigError(f"parameter '{spec_name}' must be a bool, got "
                          f"{type(value).__name__} {value!r}")
    if tp is int and (isinstance(value, bool) or not isinstance(value, int)):
        raise ConfigError(f"parameter '{spec_name}' must be an int, got "
                          f"{type(value).__name__} {value!r}")
    if not isinstance(value, tp):
        raise ConfigError(f"parameter '{spec_name}' must be a {tp.__name__}, got "
                          f"{type(value).__name__} {value!r}")
    return value


def _check_range(spec: ParamSpec, value: Any) -> None:
    if spec.choices is not None and value not in spec.choices:
        raise ConfigError(f"parameter '{spec.name}' must be one of {list(spec.choices)}, "
                          f"got {value!r}")
    if spec.minimum is not None and value < spec.minimum:
        raise ConfigError(f"parameter '{spec.name}' must be >= {spec.minimum}, got {value!r}")
    if spec.maximum is not None and value > spec.maximum:
        raise ConfigError(f"parameter '{spec.name}' must be <= {spec.maximum}, got {value!r}")


def validate_value(spec: ParamSpec, value: Any) -> Any:
    """Type-check, convert and range-check one value for ``spec``."""
    value = _check_value(spec.name, spec.type, value)
    _check_range(spec, value)
    return value


def validate_fields(instance: Any, section: str = "") -> None:
    """Type-, range- and choice-check every leaf field of a config dataclass in place.

    For ``__post_init__`` of sections, so that direct construction gets the same checks as
    a loaded file; nested sections validate themselves.
    """
    for spec in param_specs(type(instance), instance=instance):
        if "." in spec.name:
            continue
        try:
            setattr(instance, spec.name, validate_value(spec, getattr(instance, spec.name)))
        except ConfigError as exc:
            raise ConfigError(f"{section}: {exc}" if section else str(exc)) from None


def config_from_dict(data: Mapping[str, Any] | None,
                     cls: type, prefix: str = "",
                     base: Any = None) -> Any:
    """Build a config from a nested mapping; missing keys keep their defaults.

    Args:
        base: the instance whose values are the defaults (``cls()`` when None).
    Raises:
        ConfigError: for an unknown key, a wrong type or an out-of-range value.
    """
    data = {} if data is None else data
    if not isinstance(data, Mapping):
        where = f"section '{prefix[:-1]}'" if prefix else "the configuration"
        raise ConfigError(f"{where} must be a mapping, got {type(data).__name__}")
    base = cls() if base is None else base
    hints = _field_types(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            raise ConfigError(f"unknown parameter '{prefix}{key}' (known in this section: "
                              f"{', '.join(sorted(names))})")
    specs = {s.name: s for s in param_specs(cls, prefix, base)}
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        tp = hints[key]
        if _is_section(tp):
            kwargs[key] = config_from_dict(value, tp, f"{prefix}{key}.", getattr(base, key))
        else:
            kwargs[key] = validate_value(specs[prefix + key], value)
    try:
        return dataclasses.replace(base, **kwargs)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:  # cross-field checks in __post_init__
        raise ConfigError(f"{prefix[:-1] or 'configuration'}: {exc}") from exc


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """Nested plain-dict form of a config (inverse of :func:`config_from_dict`)."""
    return dataclasses.asdict(cfg)


def flatten(cfg: Any) -> dict[str, Any]:
    """``{"input.sync_slop_s": 0.05, ...}`` for every leaf of ``cfg``."""
    out: dict[str, Any] = {}

    def walk(node: Mapping[str, Any], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, Mapping):
                walk(value, f"{prefix}{key}.")
            else:
                out[prefix + key] = value

    walk(config_to_dict(cfg), "")
    return out


def config_from_flat(values: Mapping[str, Any], cls: type) -> Any:
    """Build a config from dotted names (the ROS parameter form)."""
    nested: dict[str, Any] = {}
    for name, value in values.items():
        node = nested
        *sections, leaf = name.split(".")
        for s in sections:
            child = node.setdefault(s, {})
            if not isinstance(child, dict):
                raise ConfigError(f"parameter '{name}' clashes with a value at '{s}'")
            node = child
        node[leaf] = value
    return config_from_dict(nested, cls)


# --------------------------------------------------------------------------- YAML


def _ros_params_section(doc: Any) -> Mapping[str, Any]:
    """Accept both a plain nested mapping and a ROS params file (``node: ros__parameters:``)."""
    if isinstance(doc, Mapping) and len(doc) == 1:
        (only,) = doc.values()
        if isinstance(only, Mapping) and set(only) == {"ros__parameters"}:
            return only["ros__parameters"] or {}
    return doc


# Parameters every rclpy node owns; a params file may set them for our node too.
ROS_BUILTIN_PARAMETERS = ("use_sim_time", "start_type_description_service")


def load_config(path: str | Path, cls: type) -> Any:
    """Load and validate a YAML file (plain or ROS params-file layout)."""
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read configuration file {path}: {exc}") from exc
    section = dict(_ros_params_section(doc) or {})
    for name in ROS_BUILTIN_PARAMETERS:
        section.pop(name, None)
    return config_from_dict(section, cls)


def _yaml_scalar(value: Any) -> str:
    return yaml.safe_dump(value, default_flow_style=True, width=10_000).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def config_to_yaml(cfg: Any, header: list[str], node_name: str = "/**") -> str:
    """Render a config as a commented ROS params file.

    Each parameter is preceded by its description; ``header`` comment lines open the file;
    ``node_name`` ``/**`` applies the file to the node whatever it is named or remapped to.
    """
    values = flatten(cfg)
    lines = [f"# {line}" for line in header] + [f"{node_name}:", "  ros__parameters:"]
    open_sections: list[str] = []
    for spec in param_specs(type(cfg)):
        *sections, leaf = spec.name.split(".")
        common = 0
        while (common < min(len(sections), len(open_sections))
               and sections[common] == open_sections[common]):
            common += 1
        for depth in range(common, len(sections)):
            lines.append("    " + "  " * depth + f"{sections[depth]}:")
        open_sections = sections
        indent = "    " + "  " * len(sections)
        extra = []
        if spec.choices:
            extra.append("one of " + ", ".join(map(str, spec.choices)))
        if spec.runtime:
            extra.append("changeable at run time")
        doc = spec.doc + (f" ({'; '.join(extra)})" if extra else "")
        lines.append(f"{indent}# {doc}")
        lines.append(f"{indent}{leaf}: {_yaml_scalar(values[spec.name])}")
    return "\n".join(lines) + "\n"
