"""The package's Fast DDS profile for camera-sized images (see config/fastdds_large_images.xml).

Fast DDS reads its profile file from the environment when a participant is created, so this must
run before ``rclpy.init`` in this process, and the environment is passed on to child processes.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping
from pathlib import Path

from mtl_perception.ros.resources import shipped_file

PROFILE_FILE = "config/fastdds_large_images.xml"
PROFILE_VARIABLES = ("FASTDDS_DEFAULT_PROFILES_FILE", "FASTRTPS_DEFAULT_PROFILES_FILE")


def uses_fastdds(environ: MutableMapping[str, str]) -> bool:
    """Fast DDS is the default RMW; another one chosen through RMW_IMPLEMENTATION has its own config."""
    return environ.get("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp").startswith("rmw_fastrtps")


def apply_large_image_profile(environ: MutableMapping[str, str] | None = None) -> Path | None:
    """Point Fast DDS at the shipped profile unless the user chose one; returns the file it set.

    A profile variable that is set, even to an empty string, is the user's choice and is kept:
    ``FASTDDS_DEFAULT_PROFILES_FILE= mtl-perception ...`` runs on Fast DDS's defaults.
    """
    environ = os.environ if environ is None else environ
    if not uses_fastdds(environ) or any(name in environ for name in PROFILE_VARIABLES):
        return None
    profile = shipped_file(PROFILE_FILE)
    environ[PROFILE_VARIABLES[0]] = str(profile)
    return profile
