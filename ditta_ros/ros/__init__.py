"""ROS 2 side of the node: parameters, per-camera workers, message construction."""
