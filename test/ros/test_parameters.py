"""ROS parameters are derived from the config dataclasses: declared with type and
description, loaded from --params-file / -p, validated, and round-tripped."""
from __future__ import annotations

import pytest

from conftest import PARAMS_FILE, require_interfaces
from panoptic_mapping.config import (
    ConfigError,
    PanopticMappingConfig,
    config_to_yaml,
    flatten,
    param_specs,
)

pytestmark = pytest.mark.ros
require_interfaces()

import rclpy  # noqa: E402
from rcl_interfaces.msg import ParameterType  # noqa: E402
from rclpy.parameter import Parameter  # noqa: E402

from panoptic_mapping.ros.node import MappingNode  # noqa: E402


def make_node(*ros_args: str) -> MappingNode:
    context = rclpy.context.Context()
    rclpy.init(context=context, args=["mapping_node", "--ros-args", *ros_args])
    try:
        return MappingNode(context=context)
    except Exception:
        context.try_shutdown()
        raise


def destroy(node: MappingNode) -> None:
    context = node.context
    node.destroy_node()
    context.try_shutdown()


def test_parameters_declared_with_type_and_description():
    node = make_node("--params-file", str(PARAMS_FILE))
    try:
        for spec in param_specs():
            assert node.has_parameter(spec.name), spec.name
            (desc,) = node.describe_parameters([spec.name])
            assert desc.description.startswith(spec.doc[:20])
            assert desc.read_only == (not spec.runtime)
        (desc,) = node.describe_parameters(["output.status_period_s"])
        assert desc.type == ParameterType.PARAMETER_DOUBLE
        (desc,) = node.describe_parameters(["input.use_depth"])
        assert desc.type == ParameterType.PARAMETER_BOOL
        assert node.config == PanopticMappingConfig()
    finally:
        destroy(node)


def test_config_yaml_ros_parameters_round_trip(tmp_path):
    cfg = PanopticMappingConfig()
    cfg.input.use_depth = False
    cfg.input.map_frame = "world"
    cfg.input.pose_source = "pose"
    cfg.output.status_period_s = 0.25
    path = tmp_path / "params.yaml"
    path.write_text(config_to_yaml(cfg))
    node = make_node("--params-file", str(path))
    try:
        assert node.config == cfg
        ros_values = {name: node.get_parameter(name).value for name in flatten(cfg)}
        assert ros_values == flatten(cfg)
        assert "depth" not in node.streams  # use_depth=false is honoured, not just stored
    finally:
        destroy(node)


def test_command_line_override_and_int_for_double():
    node = make_node("-p", "input.map_frame:=odom", "-p", "output.status_period_s:=3")
    try:
        assert node.config.input.map_frame == "odom"
        assert node.config.output.status_period_s == 3.0
    finally:
        destroy(node)


def test_unknown_key_in_params_file_is_rejected_by_name(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("/**:\n  ros__parameters:\n    input:\n      map_fram: map\n")
    with pytest.raises(ConfigError, match="unknown parameter 'input.map_fram'"):
        make_node("--params-file", str(path))


def test_wrong_type_is_rejected_by_name():
    with pytest.raises(ConfigError, match="'input.use_depth' must be of type bool"):
        make_node("-p", "input.use_depth:=maybe")
    with pytest.raises(ConfigError, match="'input.pose_source' must be one of"):
        make_node("-p", "input.pose_source:=gps")


def test_runtime_changes_validated_and_read_only_enforced():
    node = make_node()
    try:
        ok = node.set_parameters([Parameter("output.status_period_s", value=0.5)])[0]
        assert ok.successful and node.config.output.status_period_s == 0.5
        too_small = node.set_parameters([Parameter("output.status_period_s", value=0.0)])[0]
        assert not too_small.successful and "output.status_period_s" in too_small.reason
        assert node.config.output.status_period_s == 0.5
        read_only = node.set_parameters([Parameter("input.map_frame", value="odom")])[0]
        assert not read_only.successful
        assert node.config.input.map_frame == "map"
    finally:
        destroy(node)


def test_command_line_values_are_checked_even_where_a_params_file_shadows_them():
    """rcl gives the params file's entry for the node precedence over a -p for all nodes:
    `--params-file mapping.yaml -p output.cloud_max_points:=lots` started silently with
    200000. Such a value is validated anyway, and a valid one that lost is reported."""
    from panoptic_mapping.ros.parameters import check_command_line_params, command_line_params
    argv = ["mapping_node", "--ros-args", "--params-file", "f.yaml", "-p",
            "output.cloud_max_points:=lots", "--param", "panoptic_mapping:input.map_frame:=odom",
            "-p", "other_node:input.map_frame:=x", "-p", "broken", "--", "-p", "a:=b"]
    assert command_line_params(argv, "panoptic_mapping") == {
        "output.cloud_max_points": "lots", "input.map_frame": "odom"}
    cfg = PanopticMappingConfig()
    with pytest.raises(ConfigError, match=r"-p output.cloud_max_points:=lots: .*int"):
        check_command_line_params(argv, "panoptic_mapping", cfg)
    shadowed = ["x", "--ros-args", "-p", "output.cloud_max_points:=5000", "-p",
                "output.status_period_s:=1"]
    cfg.output.status_period_s = 1.0  # took effect (an int for a double is fine)
    (warning,) = check_command_line_params(shadowed, "panoptic_mapping", cfg)
    assert "output.cloud_max_points:=5000 did not take effect" in warning
    assert "panoptic_mapping:output.cloud_max_points:=5000" in warning


def test_the_node_refuses_an_ill_typed_command_line_value_behind_a_params_file(capsys):
    from panoptic_mapping.ros.node import main
    assert main(["mapping_node", "--ros-args", "--params-file", str(PARAMS_FILE), "-p",
                 "output.cloud_max_points:=lots"]) == 2
    assert "cloud_max_points:=lots" in capsys.readouterr().err
