"""densepred_ros: single-step diffusion depth and normals, lidar-scaled, for ROS 2.

The package root imports nothing heavy: torch, diffusers and rclpy load only in the
modules that need them.
"""

__version__ = '0.1.0'
