"""Datasets, the common label table, and joint stereo augmentation."""
