"""Launch CLIFER on a ROS4HRI robot, in place of hri_emotion_recognizer (configured and activated automatically).

    ros2 launch clifer clifer_ros4hri.launch.py
    ros2 launch clifer clifer_ros4hri.launch.py params_file:=my_clifer.yaml autostart:=false

The node runs with ``input: ros4hri``: it reads the faces hri_face_detect
tracks (/humans/faces/tracked, /humans/faces/<id>/aligned) and the person
manager's face-person association, and publishes
/humans/faces/<id>/expression (hri_msgs/Expression, valence and arousal
filled) as hri_emotion_recognizer does; do not start hri_emotion_recognizer
next to it. Arguments: params_file, namespace (of the node and its ~/ topics;
the /humans topics are absolute), use_sim_time, autostart.
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
    autostart = IfCondition(LaunchConfiguration("autostart"))
    arguments = [
        DeclareLaunchArgument("params_file",
                              default_value=PathJoinSubstitution([FindPackageShare("clifer"), "config", "clifer.yaml"]),
                              description="Parameter file for the node (its 'input' is overridden to ros4hri)"),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of the node"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="Use /clock (bag replay)"),
        DeclareLaunchArgument("autostart", default_value="true", description="Configure and activate on start"),
    ]
    node = LifecycleNode(
        package="clifer",
        executable="clifer_node",
        name="clifer",
        namespace=LaunchConfiguration("namespace"),
        parameters=[LaunchConfiguration("params_file"),
                    {"input": "ros4hri", "use_sim_time": LaunchConfiguration("use_sim_time")}],
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
