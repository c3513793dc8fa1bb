"""mtl_perception: one multi-task network for segmentation, stereo/mono depth, uncertainty and steering."""

__version__ = "0.1.0"
