"""ditta_ros: DiTTA test-time adaptation of image segmentation models for ROS 2 camera streams.

The package is split over two directories when it is run from a source checkout: the hand-written
modules here and the messages (`ditta_ros.msg`) that the build generates into the install
prefix. Extending the package path lets both be imported side by side.
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
