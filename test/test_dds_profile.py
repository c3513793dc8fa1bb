"""The shipped Fast DDS profile: when it applies, and that camera-sized stereo pairs get through with it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from fixtures_ros import ros_context  # noqa: F401  (fixture)
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image

from mtl_perception.ros.dds import PROFILE_FILE, PROFILE_VARIABLES, apply_large_image_profile

PAIRS = 10
# Publishes PAIRS stereo pairs of 512x256 rgb8 (384 KiB each) back to back, 5 pairs/s, like a camera
# driver; the left and right topics are separate writers of one participant.
PUBLISHER = """
import sys, time, rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image
rclpy.init(domain_id=int(sys.argv[1]))
node = rclpy.create_node("pair_publisher")
topics = ("left/image_rect", "right/image_rect")
pubs = [node.create_publisher(Image, t, qos_profile_sensor_data) for t in topics]
deadline = time.monotonic() + 20
while min(p.get_subscription_count() for p in pubs) == 0 and time.monotonic() < deadline:
    time.sleep(0.05)
time.sleep(1.0)  # the subscriber side of discovery may lag the publisher side
for i in range(int(sys.argv[2])):
    for pub in pubs:
        msg = Image(height=256, width=512, encoding="rgb8", step=512 * 3, data=bytes(512 * 256 * 3))
        msg.header.stamp.sec = i + 1
        pub.publish(msg)
    time.sleep(0.2)
time.sleep(1.0)
"""


def test_profile_is_applied_only_when_the_user_chose_none(tmp_path: Path) -> None:
    environ: dict[str, str] = {}
    profile = apply_large_image_profile(environ)
    assert profile is not None and environ == {PROFILE_VARIABLES[0]: str(profile)}
    assert profile.as_posix().endswith(PROFILE_FILE)
    for name in PROFILE_VARIABLES:  # set, even empty, is the user's choice
        for value in ("", str(tmp_path / "mine.xml")):
            assert apply_large_image_profile({name: value}) is None
    assert apply_large_image_profile({"RMW_IMPLEMENTATION": "rmw_cyclonedds_cpp"}) is None
    assert apply_large_image_profile({"RMW_IMPLEMENTATION": "rmw_fastrtps_dynamic_cpp"}) is not None


def test_profile_is_a_valid_fastdds_profile_with_a_large_shared_memory_segment() -> None:
    profile = apply_large_image_profile({})
    assert profile is not None
    ns = {"dds": "http://www.eprosima.com"}
    root = ET.parse(profile).getroot()
    segment = root.find(".//dds:transport_descriptor[dds:type='SHM']/dds:segment_size", ns)
    assert segment is not None and int(segment.text or 0) >= 8 * 2**20
    participant = root.find(".//dds:participant", ns)
    assert participant is not None and participant.get("is_default_profile") == "true"
    assert participant.findtext("dds:rtps/dds:useBuiltinTransports", namespaces=ns) == "false"


def test_camera_sized_stereo_pairs_cross_processes_intact(ros_context: Context) -> None:  # noqa: F811
    """With the profile every pair reaches another process.

    Without it (Fast DDS's 512 KiB shared-memory segment) this test lost 2-4 of 10 left images here.
    """
    import rclpy

    env = {k: v for k, v in os.environ.items() if k not in PROFILE_VARIABLES}
    apply_large_image_profile(env)
    node = rclpy.create_node("pair_listener", context=ros_context)
    received: dict[str, set[int]] = {"left": set(), "right": set()}
    for side in received:
        node.create_subscription(
            Image,
            f"{side}/image_rect",
            lambda m, s=side: received[s].add(m.header.stamp.sec),
            qos_profile_sensor_data,
        )
    executor = SingleThreadedExecutor(context=ros_context)
    executor.add_node(node)
    domain_id = ros_context.get_domain_id()
    publisher = subprocess.Popen([sys.executable, "-c", PUBLISHER, str(domain_id), str(PAIRS)], env=env)
    try:
        deadline = time.monotonic() + 60
        while publisher.poll() is None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        for _ in range(20):
            executor.spin_once(timeout_sec=0.05)
        assert publisher.wait(timeout=5) == 0
    finally:
        if publisher.poll() is None:
            publisher.kill()
        executor.shutdown()
        node.destroy_node()
    expected = set(range(1, PAIRS + 1))
    assert received == {"left": expected, "right": expected}
