"""The config dataclasses are the one source of truth: YAML and dicts round-trip through
them, and unknown or ill-typed keys are errors that name the key."""
from __future__ import annotations

import dataclasses

import pytest
import yaml

from panoptic_mapping import config as cfgmod
from panoptic_mapping.config import (
    ConfigError,
    PanopticMappingConfig,
    config_from_dict,
    config_from_flat,
    config_to_dict,
    config_to_yaml,
    flatten,
    load_config,
    param_specs,
)
from conftest import PARAMS_FILE


def non_default_config() -> PanopticMappingConfig:
    cfg = PanopticMappingConfig()
    cfg.input.use_depth = False
    cfg.input.pose_source = "odometry"
    cfg.input.map_frame = "world"
    cfg.output.status_period_s = 0.5
    return cfg


def test_every_parameter_is_documented_and_typed():
    specs = param_specs()
    assert len(specs) >= 4
    for spec in specs:
        assert len(spec.doc) > 15, spec.name
        assert spec.type in (bool, int, float, str) or spec.type_name.startswith("list[")


def test_committed_yaml_is_generated_from_the_dataclasses():
    assert PARAMS_FILE.read_text() == config_to_yaml(), (
        "config/mapping.yaml is stale: run `make yaml`")


def test_segmentation_node_yaml_is_generated_and_complete():
    path = PARAMS_FILE.parent / "segmentation.yaml"
    assert path.read_text() == config_to_yaml(node="segmentation"), (
        "config/segmentation.yaml is stale: run `make yaml`")
    section = yaml.safe_load(path.read_text())["/**"]["ros__parameters"]
    root = cfgmod.SegmentationNodeConfig
    assert config_from_dict(section, root) == root()
    assert set(section) == {"input", "frontend", "output"}
    # the mapping node's params file is no segmentation node's: its extra keys are errors
    with pytest.raises(ConfigError, match="mapping"):
        load_config(PARAMS_FILE, root)


def test_committed_yaml_holds_every_parameter_with_its_default():
    doc = yaml.safe_load(PARAMS_FILE.read_text())
    section = doc["/**"]["ros__parameters"]
    assert config_from_dict(section) == PanopticMappingConfig()
    flat_names = set(flatten(config_from_dict(section)))
    assert flat_names == {s.name for s in param_specs()}


def test_yaml_round_trip_of_non_default_values(tmp_path):
    cfg = non_default_config()
    path = tmp_path / "params.yaml"
    path.write_text(config_to_yaml(cfg, node_name="panoptic_mapping"))
    assert load_config(path) == cfg


def test_dict_and_flat_round_trips():
    cfg = non_default_config()
    assert config_from_dict(config_to_dict(cfg)) == cfg
    assert config_from_flat(flatten(cfg)) == cfg
    assert flatten(cfg)["input.map_frame"] == "world"


def test_missing_keys_keep_defaults():
    cfg = config_from_dict({"input": {"map_frame": "odom"}})
    assert cfg.input.map_frame == "odom"
    assert cfg.input.use_depth is True
    assert cfg.output == PanopticMappingConfig().output


@pytest.mark.parametrize("data, key", [
    ({"inputs": {}}, "inputs"),
    ({"input": {"map_fram": "map"}}, "input.map_fram"),
    ({"output": {"status_period_s": 1.0, "rate": 2}}, "output.rate"),
])
def test_unknown_key_is_an_error_naming_it(data, key):
    with pytest.raises(ConfigError, match=f"unknown parameter '{key}'"):
        config_from_dict(data)


@pytest.mark.parametrize("data, key", [
    ({"input": {"use_depth": "yes"}}, "input.use_depth"),
    ({"input": {"use_depth": 1}}, "input.use_depth"),
    ({"input": {"map_frame": 3}}, "input.map_frame"),
    ({"output": {"status_period_s": "fast"}}, "output.status_period_s"),
    ({"output": {"status_period_s": True}}, "output.status_period_s"),
    ({"input": 5}, "input"),
])
def test_wrong_type_is_an_error_naming_the_key(data, key):
    with pytest.raises(ConfigError, match=f"'{key}'"):
        config_from_dict(data)


def test_integer_for_a_float_is_accepted_as_float():
    cfg = config_from_dict({"output": {"status_period_s": 3}})
    assert cfg.output.status_period_s == 3.0
    assert isinstance(cfg.output.status_period_s, float)


def test_choices_and_bounds_are_enforced():
    with pytest.raises(ConfigError, match="'input.pose_source' must be one of"):
        config_from_dict({"input": {"pose_source": "gps"}})
    with pytest.raises(ConfigError, match="'output.status_period_s' must be >= 0.1"):
        config_from_dict({"output": {"status_period_s": 0.0}})


def test_load_config_reports_unreadable_files(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("input: [unclosed\n")
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(bad)


def test_plain_and_ros_layout_and_builtin_ros_keys(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("input:\n  map_frame: odom\n")
    assert load_config(plain).input.map_frame == "odom"
    ros = tmp_path / "ros.yaml"
    ros.write_text("panoptic_mapping:\n  ros__parameters:\n    use_sim_time: true\n"
                   "    input:\n      map_frame: odom\n")
    assert load_config(ros).input.map_frame == "odom"


def test_field_without_param_is_rejected():
    @dataclasses.dataclass
    class Broken:
        x: int = 3

    with pytest.raises(TypeError, match="not declared with param"):
        param_specs(Broken)


def test_cli_check(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("input:\n  nope: 1\n")
    assert cfgmod.main(["--check", str(bad)]) == 2
    assert "unknown parameter 'input.nope'" in capsys.readouterr().err
    assert cfgmod.main(["--check", str(PARAMS_FILE)]) == 0
