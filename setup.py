"""pip entry point for the Python side of the `clifer` ROS 2 package.

colcon builds this package with CMake (package.xml says ament_cmake) and ignores
this file. Without a ROS install, `make setup` runs the same CMakeLists into the
venv (messages, ament index entry, launch files and config under share/clifer,
so `get_package_share_directory("clifer")` works with AMENT_PREFIX_PATH set to
the venv) and then installs this: the Python packages and console scripts.
"""

from setuptools import find_packages, setup

setup(
    name="clifer-ros",
    version="0.1.0",
    description="ROS 2 facial-expression recognition that learns each person it meets (CLIFER)",
    license="Apache-2.0",
    python_requires=">=3.11",
    packages=find_packages(include=["clifer_core", "clifer_core.*", "clifer_ros", "clifer_ros.*"]),
    package_data={"clifer_core": ["imagination/default/*", "population_default/*", "adaptation_default/*", "data/*"]},
    entry_points={
        "console_scripts": [
            "clifer_node = clifer_ros.node:main",
            "clifer = clifer_core.cli:main",
            "clifer_demo = clifer_ros.demo:main",
        ],
        "clifer.commands": [
            "bag = clifer_ros.bags.cli",
        ],
    },
)
