"""Start panoptic_mapping's mapping_node, and RViz 2 with rviz/mapping.rviz if rviz:=true.

    ros2 launch panoptic_mapping mapping.launch.py \
        image_topic:=/camera/color/image_raw camera_info_topic:=/camera/color/camera_info \
        depth_topic:=/camera/aligned_depth_to_color/image_raw rviz:=true
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare

PACKAGE = "panoptic_mapping"
EXECUTABLE = "mapping_node"
PARAMS_FILE = ("config", "mapping.yaml")
RVIZ_FILE = ("rviz", "mapping.rviz")

# (launch argument, relative topic the node subscribes to, default remapping target)
TOPIC_REMAPPINGS = (
    ("image_topic", "image", "/camera/color/image_raw"),
    ("camera_info_topic", "camera_info", "/camera/color/camera_info"),
    ("depth_topic", "depth", "/camera/aligned_depth_to_color/image_raw"),
    ("pose_topic", "pose", "/camera/pose"),
    ("odometry_topic", "odometry", "/odom"),
)


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare(PACKAGE)
    arguments = [
        DeclareLaunchArgument("params_file", default_value=PathJoinSubstitution([share, *PARAMS_FILE]),
                              description="ROS parameters file of the node"),
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
    mapping_node = Node(
        package=PACKAGE,
        executable=EXECUTABLE,
        name="panoptic_mapping",
        output="screen",
        parameters=[LaunchConfiguration("params_file"), {"use_sim_time": use_sim_time}],
        remappings=[(topic, LaunchConfiguration(arg)) for arg, topic, _ in TOPIC_REMAPPINGS],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", LaunchConfiguration("rviz_config")],
        parameters=[{"use_sim_time": use_sim_time}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription([*arguments, mapping_node, rviz])
