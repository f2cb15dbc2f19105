"""The thin ROS 2 shell around clifer_core: message conversion, the lifecycle node, bags."""
