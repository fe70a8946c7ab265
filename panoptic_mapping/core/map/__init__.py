"""The instance map, one module per idea: ``config`` (every number it decides by),
``voxels`` (sparse voxel index), ``votes`` (per-voxel id votes), ``ids`` (the id table),
``views`` (per-view image measures), ``association`` (a frame's masks to ids),
``evidence`` (merge evidence), ``lifecycle`` (merges, pending parts, ghosts),
``localize`` (InstanceLoc's mask vote) and ``instances`` (:class:`InstanceMap`, the parts
wired together behind one lock).

Knows nothing of the field: where the map is undecided, the mapper passes the field in as
a :class:`~panoptic_mapping.core.map.instances.InstanceFill`.
"""
