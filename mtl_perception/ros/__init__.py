"""The rclpy node: a thin adapter around the runtime pipeline."""
