"""Start panoptic_mapping's mapping_node (active), optionally a segmentation_node feeding it
masks, and RViz 2 with rviz/mapping.rviz if rviz:=true.

    ros2 launch panoptic_mapping mapping.launch.py \
        image_topic:=/camera/color/image_raw camera_info_topic:=/camera/color/camera_info \
        depth_topic:=/camera/aligned_depth_to_color/image_raw rviz:=true

segmentation_node:=true runs segmentation in a process of its own (config/segmentation.yaml;
on a robot, start it on the computer with the GPU) and the mapping node takes its masks
(input.masks_source 'topic'). autostart:=false leaves the mapping node 'unconfigured' for a
lifecycle manager (`ros2 lifecycle set /panoptic_mapping configure`, then `activate`).
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution, PythonExpression
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "panoptic_mapping"
EXECUTABLE = "mapping_node"
SEGMENTATION_EXECUTABLE = "segmentation_node"
PARAMS_FILE = ("config", "mapping.yaml")
SEGMENTATION_PARAMS_FILE = ("config", "segmentation.yaml")
RVIZ_FILE = ("rviz", "mapping.rviz")
# Where the segmentation node publishes (its ~/masks) and the mapping node listens.
MASKS_TOPIC = "/segmentation/masks"

# (launch argument, relative topic the node subscribes to, default remapping target)
TOPIC_REMAPPINGS = (
    ("image_topic", "image", "/camera/color/image_raw"),
    ("camera_info_topic", "camera_info", "/camera/color/camera_info"),
    ("depth_topic", "depth", "/camera/aligned_depth_to_color/image_raw"),
    ("pose_topic", "pose", "/camera/pose"),
    ("odometry_topic", "odometry", "/odom"),
    ("masks_topic", "masks", "/segmentation/masks"),
)
# The camera topics the segmentation node shares with the mapping node.
CAMERA_TOPICS = ("image", "camera_info", "depth")


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, *PARAMS_FILE]),
                              description="ROS parameters file of the mapping node"),
        DeclareLaunchArgument("segmentation_params_file",
                              default_value=PathJoinSubstitution([share, *SEGMENTATION_PARAMS_FILE]),
                              description="ROS parameters file of the segmentation node"),
        DeclareLaunchArgument("segmentation_node", default_value="false",
                              description="Segment in a segmentation_node process of its own "
                                          "(the mapping node takes its masks)"),
        DeclareLaunchArgument("autostart", default_value="true",
                              description="Configure and activate the mapping node (a "
                                          "lifecycle node) at start-up"),
        DeclareLaunchArgument("use_sim_time", default_value="false",
                              description="Use /clock (true when replaying a bag)"),
        DeclareLaunchArgument("rviz", default_value="false",
                              description="Also start rviz2 with the package's configuration"),
        DeclareLaunchArgument("rviz_config", default_value=PathJoinSubstitution([share, *RVIZ_FILE]),
                              description="RViz 2 configuration file"),
    ]
    arguments += [DeclareLaunchArgument(arg, default_value=default,
                                        description=f"Topic remapped to the node's '{topic}'")
                  for arg, topic, default in TOPIC_REMAPPINGS]
    use_sim_time = LaunchConfiguration("use_sim_time")
    split = LaunchConfiguration("segmentation_node")
    masks_source = PythonExpression(["'topic' if '", split, "'.lower() == 'true' else 'segmenter'"])
    mapping_node = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name="panoptic_mapping",
        output="screen",
        parameters=[LaunchConfiguration("params_file"),
                    {"use_sim_time": use_sim_time,
                     "lifecycle.autostart": LaunchConfiguration("autostart"),
                     "input.masks_source": masks_source}],
        remappings=[(topic, LaunchConfiguration(arg)) for arg, topic, _ in TOPIC_REMAPPINGS],
    )
    segmentation_node = Node(
        package=PACKAGE,
        executable=SEGMENTATION_EXECUTABLE,
        name="segmentation",
        output="screen",
        parameters=[LaunchConfiguration("segmentation_params_file"),
                    {"use_sim_time": use_sim_time}],
        remappings=[(topic, LaunchConfiguration(arg)) for arg, topic, _ in TOPIC_REMAPPINGS
                    if topic in CAMERA_TOPICS] + [("~/masks", LaunchConfiguration("masks_topic"))],
        condition=IfCondition(split),
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", LaunchConfiguration("rviz_config")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, mapping_node, segmentation_node, rviz])
