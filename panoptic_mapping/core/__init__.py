"""The ROS-free mapping core: pure Python, numpy and torch.

No module below this package may import rclpy or any ROS message package
(``test/test_import_boundary.py`` enforces it).
"""
