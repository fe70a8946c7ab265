"""ROS parameters derived from the config dataclasses (the one source of truth).

Each leaf of :class:`~panoptic_mapping.core.config.PanopticMappingConfig` becomes one ROS
parameter with the same dotted name, its type and its description; read-only unless the
field is marked ``runtime``. Values from ``--params-file`` or ``-p`` that name no known
parameter, or that have the wrong type, stop start-up with a :class:`ConfigError` naming
the key.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import yaml

from rcl_interfaces.msg import ParameterDescriptor, ParameterType, SetParametersResult
from rclpy.exceptions import InvalidParameterTypeException
from rclpy.node import Node
from rclpy.parameter import Parameter

from panoptic_mapping.config import (
    ROS_BUILTIN_PARAMETERS,
    ConfigError,
    ParamSpec,
    PanopticMappingConfig,
    config_from_flat,
    flatten,
    param_specs,
    validate_value,
)

_ROS_TYPES: dict[Any, int] = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
    list[bool]: ParameterType.PARAMETER_BOOL_ARRAY,
    list[int]: ParameterType.PARAMETER_INTEGER_ARRAY,
    list[float]: ParameterType.PARAMETER_DOUBLE_ARRAY,
    list[str]: ParameterType.PARAMETER_STRING_ARRAY,
}

# Parameters rclpy or the middleware own; a params file may set them for any node.
_FOREIGN_PREFIXES = ("qos_overrides.",)


def ros_type(spec: ParamSpec) -> int:
    """ROS ParameterType constant of a config field."""
    return _ROS_TYPES[spec.type]


def descriptor(spec: ParamSpec) -> ParameterDescriptor:
    """Typed, documented descriptor of a config field."""
    doc = spec.doc
    if spec.choices:
        doc += f" One of: {', '.join(map(str, spec.choices))}."
    return ParameterDescriptor(name=spec.name, type=ros_type(spec), description=doc,
                               read_only=not spec.runtime)


def _overrides(node: Node) -> dict[str, Parameter]:
    # rclpy keeps the values from --params-file / -p here until they are declared; there is
    # no public accessor, and without it unknown keys would be silently ignored.
    return dict(getattr(node, "_parameter_overrides", {}))


def check_unknown_overrides(node: Node, specs: list[ParamSpec]) -> None:
    """Raise ConfigError if a params-file or ``-p`` value names no known parameter."""
    known = {s.name for s in specs} | set(ROS_BUILTIN_PARAMETERS)
    unknown = sorted(name for name in _overrides(node)
                     if name not in known and not name.startswith(_FOREIGN_PREFIXES))
    if unknown:
        raise ConfigError(
            f"unknown parameter '{unknown[0]}'"
            + (f" (and {len(unknown) - 1} more: {', '.join(unknown[1:])})" if len(unknown) > 1
               else "")
            + "; see config/mapping.yaml for every known parameter")


def _coerce_int_overrides(node: Node, specs: list[ParamSpec]) -> None:
    # A YAML `1` for a double parameter is an integer to rclpy, which would reject it;
    # it is not a type error to a person, so it is widened before declaration.
    overrides = getattr(node, "_parameter_overrides", None)
    if overrides is None:
        return
    for spec in specs:
        p = overrides.get(spec.name)
        if p is None:
            continue
        if spec.type is float and p.type_ == Parameter.Type.INTEGER:
            overrides[spec.name] = Parameter(spec.name, Parameter.Type.DOUBLE, float(p.value))
        elif spec.type == list[float] and p.type_ == Parameter.Type.INTEGER_ARRAY:
            overrides[spec.name] = Parameter(spec.name, Parameter.Type.DOUBLE_ARRAY,
                                             [float(v) for v in p.value])


def _plain(value: Any) -> Any:
    # rclpy returns arrays as array.array / numpy; the config wants plain lists.
    if value is not None and not isinstance(value, (bool, int, float, str)):
        return list(value)
    return value


def declare_config(node: Node, root: type = PanopticMappingConfig) -> Any:
    """Declare every field of the config ``root`` (the mapping node's by default) as a ROS
    parameter and return the validated config.

    Raises:
        ConfigError: an unknown key, a value of the wrong type or out of range.
    """
    specs = param_specs(root)
    check_unknown_overrides(node, specs)
    _coerce_int_overrides(node, specs)
    values: dict[str, Any] = {}
    for spec in specs:
        default = spec.default
        if isinstance(default, list) and not default:
            default = Parameter.Type(ros_type(spec))  # an empty list carries no type
        try:
            p = node.declare_parameter(spec.name, default, descriptor(spec))
        except InvalidParameterTypeException as exc:
            given = _overrides(node).get(spec.name)
            got = given.type_.name.lower() if given is not None else "?"
            raise ConfigError(f"parameter '{spec.name}' must be of type {spec.type_name}, "
                              f"got {got} {given.value if given is not None else ''}") from exc
        value = _plain(p.value)
        values[spec.name] = spec.default if value is None else value
    return config_from_flat(values, root)


def runtime_validator(
    apply: Callable[[str, Any], None], root: type = PanopticMappingConfig,
) -> Callable[[list[Parameter]], SetParametersResult]:
    """An ``add_on_set_parameters_callback`` hook: validate, then ``apply(name, value)``.

    Types are already enforced by rclpy (the parameters are not dynamically typed) and
    read-only parameters are refused by it; this adds the ranges and choices of the config.
    """
    specs = {s.name: s for s in param_specs(root)}

    def callback(params: list[Parameter]) -> SetParametersResult:
        checked: list[tuple[str, Any]] = []
        for p in params:
            spec = specs.get(p.name)
            if spec is None:
                continue  # use_sim_time and friends belong to rclpy
            try:
                checked.append((p.name, validate_value(spec, _plain(p.value))))
            except ConfigError as exc:
                return SetParametersResult(successful=False, reason=str(exc))
        for name, value in checked:
            apply(name, value)
        return SetParametersResult(successful=True)

    return callback



def command_line_params(argv: Sequence[str], node_name: str) -> dict[str, str]:
    """name -> raw value of every ``-p name:=value`` (or ``--param``) in the ``--ros-args``
    parts of ``argv`` that applies to ``node_name`` (no node prefix, or that node's)."""
    out: dict[str, str] = {}
    in_ros = False
    items = list(argv)
    for k, arg in enumerate(items):
        if arg == "--ros-args":
            in_ros = True
        elif arg == "--":
            in_ros = False
        elif in_ros and arg in ("-p", "--param") and k + 1 < len(items):
            name, sep, value = items[k + 1].partition(":=")
            node, colon, leaf = name.rpartition(":")
            if sep and (not colon or node.lstrip("/") == node_name):
                out[leaf if colon else name] = value
    return out


def check_command_line_params(argv: Sequence[str], node_name: str, config: Any) -> list[str]:
    """Check the ``-p`` values of the command line even where a params file shadows them.

    rcl gives a params-file entry for the node precedence over a ``-p`` for all nodes, so
    ``--params-file mapping.yaml -p output.cloud_max_points:=lots`` starts with the file's
    value and says nothing. Every such value is validated (ConfigError naming it), and one
    that did not take effect is returned as a warning saying how to make it.
    """
    specs = {s.name: s for s in param_specs(type(config))}
    effective = flatten(config)
    warnings = []
    for name, raw in command_line_params(argv, node_name).items():
        spec = specs.get(name)
        if spec is None:
            continue  # unknown names: check_unknown_overrides
        value = yaml.safe_load(raw) if raw else raw  # how rcl reads a -p value
        if spec.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            value = validate_value(spec, value)
        except ConfigError as exc:
            raise ConfigError(f"-p {name}:={raw}: {exc}") from None
        if effective.get(name) != value:
            warnings.append(f"-p {name}:={raw} did not take effect: the params file's "
                            f"{effective.get(name)!r} has precedence over a -p for all nodes; "
                            f"write -p {node_name}:{name}:={raw}")
    return warnings
