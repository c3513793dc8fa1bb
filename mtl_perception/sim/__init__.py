"""Synthetic stereo driving world on pybullet: scenes, stereo rig, ego drive, ground truth."""
