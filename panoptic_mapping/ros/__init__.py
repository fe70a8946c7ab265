"""The ROS 2 adapter: message conversion, parameters, threads and the node.

Holds no mathematics; everything it computes comes from :mod:`panoptic_mapping.core`.
"""
