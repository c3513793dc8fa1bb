"""Backbone, stereo and mono multi-task networks, heads."""
