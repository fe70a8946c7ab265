"""The instance map: per-voxel id votes (a sparse voxel index), the id table and its
lifecycle, association of a frame's masks, merge evidence and InstanceLoc's vote.

Knows nothing of the field: where the map is undecided, the mapper passes the field in as
a :class:`~panoptic_mapping.core.map.instances.InstanceFill`.
"""
