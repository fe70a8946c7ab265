"""The panoptic feature field and everything that trains it: hash-grid encoding, the
field's branches, the occupancy grid and scene extent, ray samplers, volume rendering,
losses, the keyframe buffer and the trainer.

Knows nothing of the instance map: the labels it learns come in through the keyframes.
"""
