"""rosbag2 reading/writing, replay evaluation and report."""
