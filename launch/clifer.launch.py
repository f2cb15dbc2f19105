"""Launch the CLIFER lifecycle node, configured and activated automatically.

    ros2 launch clifer clifer.launch.py image_topic:=/camera/color/image_raw
    ros2 launch clifer clifer.launch.py namespace:=robot autostart:=false

Arguments: image_topic, params_file, namespace, use_sim_time (for bag replay
with --clock), autostart (drive configure -> activate; false leaves the node
unconfigured for a lifecycle manager).
"""

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, EmitEvent, RegisterEventHandler
from launch.conditions import IfCondition
from launch.events import matches_action
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode
from launch_ros.event_handlers import OnStateTransition
from launch_ros.events.lifecycle import ChangeState
from launch_ros.substitutions import FindPackageShare
from lifecycle_msgs.msg import Transition


def generate_launch_description():
    image_topic = LaunchConfiguration("image_topic")
    autostart = IfCondition(LaunchConfiguration("autostart"))
    arguments = [
        DeclareLaunchArgument("image_topic", default_value="/camera/color/image_raw",
                              description="Camera image topic (sensor_msgs/Image; '<topic>/compressed' when "
                                          "image_transport is compressed)"),
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("clifer"), "config", "clifer.yaml"]),
                              description="Parameter file for the node"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag replay)"),
        DeclareLaunchArgument("autostart", default_value="true", description="Configure and activate on start"),
    ]
    node = LifecycleNode(
        package="clifer",
        executable="clifer_node",
        name="clifer",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"), {"use_sim_time": LaunchConfiguration("use_sim_time")}],
        remappings=[("image", image_topic), ("image/compressed", [image_topic, "/compressed"])],
        output="screen",
    )
    configure = EmitEvent(
        event=ChangeState(lifecycle_node_matcher=matches_action(node), transition_id=Transition.TRANSITION_CONFIGURE),
        condition=autostart,
    )
    activate_when_configured = RegisterEventHandler(
        OnStateTransition(
            target_lifecycle_node=node,
            goal_state="inactive",
            entities=[EmitEvent(event=ChangeState(lifecycle_node_matcher=matches_action(node),
                                                  transition_id=Transition.TRANSITION_ACTIVATE))],
        ),
        condition=autostart,
    )
    return LaunchDescription(arguments + [node, activate_when_configured, configure])
