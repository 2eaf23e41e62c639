"""pip install of the ditta_ros Python package (library and tools, without the ROS messages).

ROS users build the package with colcon (CMakeLists.txt), which also generates the messages.
"""
from setuptools import setup

setup()
