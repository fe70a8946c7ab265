"""The benchmark: third-party scenes with ground truth, simulated and real 2D front-ends,
metrics and baselines (``python -m panoptic_mapping.bench``).

Not part of the ROS-free core's runtime path; it may use pybullet and scikit-image.
"""
