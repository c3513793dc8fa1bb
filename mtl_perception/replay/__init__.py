"""rosbag2 reading/writing, replay evaluation and report."""

# in-process through the runtime pipeline, or through the live node over DDS
REPLAY_MODES = ("pipeline", "node")
