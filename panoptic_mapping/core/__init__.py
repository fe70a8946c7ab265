"""The ROS-free mapping core: pure Python, numpy and torch.

Layers, lowest first (each imports only from below; ``test/test_layers.py`` enforces it):
``geometry`` < ``frames`` < {``field/``, ``map/``, ``semantics``, ``io/``} < ``mapper``.
No module here imports rclpy or a ROS message package.
"""
