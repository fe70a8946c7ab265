"""rviz/mapping.rviz parses as YAML, uses only classes RViz 2 ships, and shows the map."""
from __future__ import annotations

import yaml

from conftest import REPO

# Plugin classes shipped by rviz_common and rviz_default_plugins (ROS 2 Humble .. Kilted).
RVIZ2_CLASSES = {
    *(f"rviz_common/{p}" for p in ("Displays", "Help", "Selection", "Time",
                                     "Tool Properties", "Views")),
    *(f"rviz_default_plugins/{d}" for d in (
        "AccelStamped", "Axes", "Camera", "DepthCloud", "Effort", "FluidPressure", "Grid",
        "GridCells", "Illuminance", "Image", "InteractiveMarkers", "LaserScan", "Map",
        "Marker", "MarkerArray", "Odometry", "Path", "PointCloud", "PointCloud2",
        "PointStamped", "Polygon", "Pose", "PoseArray", "PoseWithCovariance", "Range",
        "RelativeHumidity", "RobotModel", "TF", "Temperature", "TwistStamped", "Wrench",
        # tools
        "Interact", "MoveCamera", "Select", "FocusCamera", "Measure", "SetInitialPose",
        "SetGoal", "PublishPoint",
        # view controllers
        "Orbit", "XYOrbit", "FPS", "ThirdPersonFollower", "TopDownOrtho")),
}


def load() -> dict:
    return yaml.safe_load((REPO / "rviz" / "mapping.rviz").read_text())


def classes(node) -> list[str]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "Class" and isinstance(value, str) and value:
                found.append(value)
            found += classes(value)
    elif isinstance(node, list):
        for item in node:
            found += classes(item)
    return found


def test_only_known_classes():
    used = classes(load())
    assert used, "no classes found"
    assert set(used) <= RVIZ2_CLASSES, set(used) - RVIZ2_CLASSES


def test_fixed_frame_and_displays():
    manager = load()["Visualization Manager"]
    assert manager["Global Options"]["Fixed Frame"] == "map"
    displays = {d["Name"]: d for d in manager["Displays"]}
    assert len(displays) == len(manager["Displays"]), "display names must be unique"
    cloud = displays["Labeled cloud"]
    assert cloud["Topic"]["Value"] == "/panoptic_mapping/labeled_cloud"
    assert cloud["Channel Name"] == "instance" and cloud["Enabled"]  # coloured by instance id
    assert cloud["Topic"]["Durability Policy"] == "Transient Local"
    # one view per field of the cloud: the others one click away
    channels = {d["Channel Name"] for d in displays.values()
                if d["Class"] == "rviz_default_plugins/PointCloud2"
                and d["Topic"]["Value"] == "/panoptic_mapping/labeled_cloud"}
    assert channels == {"instance", "semantic", "confidence", "rgb"}
    # the last per-point text query's answer, coloured by relevance
    query = displays["Text query (query_points)"]
    assert query["Topic"]["Value"] == "/panoptic_mapping/query_cloud"
    assert query["Channel Name"] == "relevance"
    assert query["Topic"]["Durability Policy"] == "Transient Local"
    assert displays["Instances"]["Topic"]["Value"] == "/panoptic_mapping/instances"
    images = {d["Topic"]["Value"] for d in displays.values()
              if d["Class"] == "rviz_default_plugins/Image"}
    assert "/panoptic_mapping/panoptic_image" in images
    assert "rviz_default_plugins/TF" in {d["Class"] for d in displays.values()}


def test_every_published_display_topic_is_one_the_node_publishes():
    node_source = (REPO / "panoptic_mapping" / "ros" / "node.py").read_text()
    for d in load()["Visualization Manager"]["Displays"]:
        topic = d.get("Topic", {}).get("Value", "")
        if topic.startswith("/panoptic_mapping/"):
            assert f'"~/{topic.rsplit("/", 1)[1]}"' in node_source, topic
