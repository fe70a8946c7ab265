"""Configuration of the instance map: association, merge evidence, id lifecycle, voxel
votes and InstanceLoc's mask vote. Every number the map decides by lives here."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from panoptic_mapping.params import param

__all__ = ["InstanceConfig", "MaskVoteConfig", "ChangeConfig"]


@dataclass
class MaskVoteConfig:
    """InstanceLoc's vote of a frame's masks over the map's rendering (also used to
    re-label keyframes against the current map)."""

    min_share: float = param(0.3, "A mask answers its majority map id when that id holds "
                             "at least this share of the mask's valid pixels.",
                             minimum=0.0, maximum=1.0)
    split_share: float = param(0.25, "Inside a mask, another map id keeps its own pixels "
                               "when it holds this share of the mask (a front-end merge of "
                               "two objects).", minimum=0.0, maximum=1.0)
    swallow_share: float = param(0.5, "Inside a mask, another map id keeps its own pixels "
                                 "when this share of its rendered pixels lie in the mask (a "
                                 "small object the front-end swallowed into its support).",
                                 minimum=0.0, maximum=1.0)
    boundary_confidence: float = param(0.75, "Where two answered ids meet, the map's "
                                       "boundary is taken where its vote share is at least "
                                       "this (voxels on a boundary hold mixed votes).",
                                       minimum=0.0, maximum=1.0)


@dataclass
class ChangeConfig:
    """Change detection: instances removed once frames with measured depth keep seeing
    through the voxels they show (:mod:`panoptic_mapping.core.map.changes`)."""

    enabled: bool = param(True, "Remove instances that frames with measured depth see "
                          "through (an object taken away); an event is recorded.")
    min_voxels: int = param(20, "Voxels of an instance a view must judge (in view, with "
                            "depth at and around their pixels, not occluded) before it "
                            "says anything about it.", minimum=1)
    gone_share: float = param(0.8, "A view says an instance is gone when it sees through "
                              "at least this share of the voxels it judges.",
                              minimum=0.0, maximum=1.0)
    present_share: float = param(0.15, "A view says an instance is there when at least this "
                                 "share of the voxels it judges lies on the measured "
                                 "surface (the count of 'gone' views starts over).",
                                 minimum=0.0, maximum=1.0)
    gone_views: int = param(4, "Views saying 'gone', none saying 'there' in between, before "
                            "an instance is removed.", minimum=1)
    tol_rel: float = param(0.02, "A voxel is seen through when the measured depth lies "
                           "behind it by more than this share of the depth plus one voxel.",
                           minimum=0.0, maximum=0.9)
    surface_tol_rel: float = param(0.01, "A voxel is on the measured surface within this "
                                   "share of the depth plus one voxel (tighter than tol_rel: "
                                   "the bottom of an object taken off a table lies near the "
                                   "table; between the two a voxel says nothing).",
                                   minimum=0.0, maximum=0.9)
    max_instance_voxels: int = param(50000, "Instances showing more voxels than this "
                                     "(floors, walls, large furniture: 5 m2 of surface at 1 "
                                     "cm voxels) are not judged; nobody carries them away.",
                                     minimum=1)
    refresh_frames: int = param(16, "Frames between re-reading which voxels each instance "
                                "shows (a quarter of it when an instance became shown since; "
                                "each frame judges the last reading, which costs a third of "
                                "the rest of a frame).", minimum=1)
    reidentify: bool = param(True, "An instance removed as gone that shows up elsewhere "
                             "(the one new instance of its size, shape and mask embedding; "
                             "without embeddings, no re-identification) within reid_frames "
                             "frames is the object moved: it takes its id back and a "
                             "'moved' event is recorded.")
    reid_frames: int = param(64, "Frames around a removal in which a new instance may be "
                             "the removed object seen elsewhere (it may be seen at its new "
                             "place before the old place is seen empty).", minimum=1)
    reid_size_ratio: float = param(1.4, "Largest ratio between each of the removed and "
                                   "the new instance's extents (the two horizontal ones "
                                   "sorted, and the vertical; 10th to 90th percentile of "
                                   "the voxels they show) for them to be one object.",
                                   minimum=1.0)
    reid_mean_ratio: float = param(1.2, "Largest geometric mean of those three ratios (on "
                                   "average within this, none beyond reid_size_ratio).",
                                   minimum=1.0)
    reid_min_cosine: float = param(0.8, "Smallest cosine between their mean mask "
                                   "embeddings.", minimum=-1.0, maximum=1.0)


@dataclass
class InstanceConfig:
    """Association and fusion of 2D masks into 3D instances (the rules: module doc of
    :mod:`panoptic_mapping.core.map.association`)."""

    # ---- voxel votes
    voxel_size_m: float = param(0.01, "Edge of the instance voxels [m].", minimum=0.001)
    votes_per_voxel: int = param(4, "Instance votes kept per voxel.", minimum=1, maximum=16)
    voxel_features: bool = param(True, "Fuse the masks' embeddings per voxel across views "
                                 "(D float16 values a voxel): labels from the map and "
                                 "per-point text queries. Off saves the memory; labels then "
                                 "come from the masks alone.")
    feature_voxel_size_m: float = param(0.03, "Edge of the voxels the features are fused "
                                        "in [m] (D float16 values each: at 1 cm a room's "
                                        "surfaces would hold gigabytes of 512-D features).",
                                        minimum=0.001)
    feature_max_voxels: int = param(200_000, "At most this many feature voxels (about 200 "
                                    "MB of 512-D features, and as much again for the "
                                    "readers' copy); a full store keeps fusing into the "
                                    "voxels it has and counts what it refused "
                                    "(feature_voxels_refused in the status).", minimum=1)
    feature_disagree_weight: float = param(0.1, "Weight of a view's features at pixels its "
                                           "mask gave another id than the map showed "
                                           "there (the mask swallowed what the map holds: "
                                           "its embedding describes something else).",
                                           minimum=0.0, maximum=1.0)
    edge_vote_weight: float = param(0.5, "Weight of the vote of a pixel on a mask's edge "
                                    "(interior pixels vote 1): a mask's edge wanders by a "
                                    "pixel from frame to frame, so a boundary voxel goes to "
                                    "the object whose interior it was seen in.",
                                    minimum=0.0, maximum=1.0)
    unvote_weight: float = param(1.0, "Vote weight withdrawn from an id at pixels the frame "
                                 "gave to another id whose mask owns them (0: no negative "
                                 "evidence).", minimum=0.0)
    carve_weight: float = param(1.0, "Vote weight withdrawn from every id of a voxel a "
                                "frame's depth sees through (see carve_tol_rel); applied "
                                "for the depth sources mapping.carve_free_space names.",
                                minimum=0.0)
    carve_tol_rel: float = param(0.05, "A voxel is seen through when it lies nearer than "
                                 "the depth behind it by this share of that depth plus one "
                                 "voxel.", minimum=0.0, maximum=0.9)
    search_radius: int = param(1, "Voxels searched around a point whose own voxel is empty.",
                               minimum=0, maximum=2)
    max_search_radius: int = param(2, "Widest search (voxels) for points whose pixel covers "
                                   "more than a voxel on the surface (far surfaces).",
                                   minimum=0, maximum=4)
    # ---- association of one frame's masks
    cover_fraction: float = param(0.5, "A mask owns a map id when it covers this share of "
                                  "the id's visible pixels.", minimum=0.5, maximum=1.0)
    major_share: float = param(0.25, "An id a mask owns defines the mask only when it is "
                               "at least this share of the mask's mapped pixels; smaller owned "
                               "ids keep their own pixels.", minimum=0.0, maximum=1.0)
    new_coverage: float = param(0.3, "A mask whose pixels are mapped less than this share "
                                "becomes a new instance.", minimum=0.0, maximum=1.0)
    min_pixels: int = param(6, "Overlaps smaller than this many pixels are ignored (for "
                            "small masks see small_mask_share).", minimum=1)
    small_mask_share: float = param(0.25, "For a small mask an overlap counts from this "
                                    "share of the mask when that is below min_pixels: a far, "
                                    "small object is rendered with a few pixels of its own "
                                    "id among stray ones, and without it every view of it "
                                    "makes a new id that is never confirmed.",
                                    minimum=0.0, maximum=1.0)
    small_mask_min_overlap: int = param(2, "Least overlap [px] that counts, however small "
                                        "the mask.", minimum=1)
    one_mask_per_id: bool = param(True, "When several masks join one id, only the one "
                                  "overlapping it most keeps it; the others move to a "
                                  "fragment they own, their runner-up id or a new id.")
    fragment_reuse: bool = param(True, "A mask displaced from a young id takes a fragment "
                                 "id it owns (an object glued to its neighbour when first "
                                 "seen, now seen alone) instead of starting another id.")
    runner_up_presence: float = param(0.5, "A displaced mask joins the runner-up id of its "
                                      "voxels' votes only where that id's vote weight is at "
                                      "least this many votes per voxel under the mask (a "
                                      "presence, not a stray boundary vote).", minimum=0.0)
    part_min_share: float = param(0.1, "A displaced mask at least this share of the id's "
                                  "visible size is a pending part of it; a smaller one is "
                                  "a new object (but see small_parts_pending).",
                                  minimum=0.0, maximum=1.0)
    small_parts_pending: bool = param(
        True, "A displaced mask under part_min_share of a settled id's visible size whose "
        "embedding agrees with the id's (merge_min_cosine) and is that id's label and "
        "nothing else (semantics.support_min_residual) is a pending part of it too: a board "
        "a segmenter cut off a shelf. One of another kind (a mug the table's mask had "
        "swallowed, a duck whose masks embed close to the floor's) is an object at once. "
        "Needs a vocabulary.")
    settled_frames: int = param(4, "A part split off an id seen in at most this many frames "
                                "is an object at once, not a pending part.", minimum=0)
    depth_edge_curvature: float = param(0.02, "A pixel is on a depth edge where the second "
                                        "difference of inverse depth exceeds this share of "
                                        "its inverse depth (jumps and creases).", minimum=0.0)
    apart_at: str = param("concave", "Where a boundary between two masks is 'apart' "
                          "evidence (see apart_edge_share): 'any_edge' (jumps and creases) "
                          "or 'concave' (jumps and concave creases only, where objects "
                          "meet; a convex crease, a box's edge, runs across one object).",
                          choices=("any_edge", "concave"))
    # ---- merge evidence
    min_contact: int = param(4, "Pixel edges two ids must share in a view to count as "
                             "touching.", minimum=1)
    hold_share: float = param(0.5, "For merge evidence a mask holds an id when it covers "
                              "this share of the id's visible pixels ('together': one mask "
                              "holds both).", minimum=0.0, maximum=1.0)
    merge_min_together: int = param(4, "Views in which one mask held both ids before two "
                                    "ids may merge.", minimum=1)
    merge_ratio: float = param(2.0, "Ids merge when 'together' views outnumber 'apart' "
                               "views by this factor.", minimum=0.0)
    merge_min_cosine: float = param(0.75, "Ids whose mean mask embeddings have a lower cosine "
                                    "similarity are different things and never merge.",
                                    minimum=-1.0, maximum=1.0)
    merge_min_consensus: float = param(0.2, "Ids whose mean mask embeddings agree (cosine "
                                       ">= merge_min_cosine; both have one) also merge when "
                                       "one mask held both in at least this share of the "
                                       "views that saw them meet (together / (together + "
                                       "apart), MaskClustering's view consensus), and in "
                                       "merge_consensus_min_together views: a segmenter that "
                                       "cuts an object at the same crease in most views "
                                       "still holds it whole in some. 0: off.",
                                       minimum=0.0, maximum=1.0)
    merge_consensus_min_together: int = param(8, "Views in which one mask held both ids "
                                              "before they may merge on view consensus "
                                              "(merge_min_consensus): a share of few views "
                                              "is mostly chance (a front-end that glues two "
                                              "touching things in a few views early on).",
                                              minimum=1)
    merge_parts_every: int = param(
        5, "Frames between looks for parts resting on their own kind: a shown id that "
        "rests only on ids whose mean mask embeddings agree with its own (cosine >= "
        "merge_min_cosine), by contact (semantics.support_gap_m, support_min_share), is "
        "not much narrower across the up axis than what it rests on (more than "
        "semantics.support_max_size_ratio of its extent) and is smaller than it "
        "(merge_parts_max_volume_ratio) is part of one object with it: a segmenter cuts a "
        "duck's head off at the same crease in every view, so no view holds the two "
        "together. A small thing on its support (a mug on a table that every view calls "
        "'table') is narrow and stays; two things of one kind stacked are alike in size "
        "and stay two. 0: off.", minimum=0)
    merge_parts_max_volume_ratio: float = param(
        0.6, "A part holds at most this share of the voxels of the id it rests on (a part "
        "is smaller than the whole; stacked jenga blocks are not a part of each other: "
        "without this bound they merged, BENCHMARKS.md 'Parts resting on their own "
        "kind').", minimum=0.0)
    merge_parts_min_inside: float = param(
        0.5, "At the looks of merge_parts_every, a shown id whose mean mask embedding "
        "agrees with a larger id's (cosine >= merge_min_cosine), which holds at most "
        "merge_parts_max_volume_ratio of that id's voxels and has at least this share of "
        "its voxels inside that id's box (the middle 90 % of its voxels along each axis), "
        "is part of it, once looks have found it so for merge_parts_hold_frames: a "
        "segmenter cuts a shelf's boards "
        "from its frame at the same creases in every view, and the pieces lie within the "
        "extent of the largest. Two things of a kind side by side or stacked lie outside "
        "each other's box; an id whose box holds where the camera stood (a room's walls) "
        "encloses nothing. Needs mask embeddings. 0: off.",
        minimum=0.0, maximum=1.0)
    merge_parts_hold_frames: int = param(
        5, "merge_parts_min_inside merges a part once every look over at least this many "
        "frames mapped found it enclosed (two looks merge_parts_every apart or more): a "
        "box a glued mask stretched over a neighbour is back within a few frames, a "
        "part's place inside its whole is not. 0: at the first look.", minimum=0)
    merge_parts_under: bool = param(
        True, "With merge_parts_min_inside, a part the larger id rests on (by contact, "
        "semantics.support_gap_m; that id resting mostly on ids of its own kind) and that "
        "reaches lower than its bottom counts what lies "
        "under that id's box, within its footprint, as inside: a table top rests on its "
        "legs, a shelf's upper section on its lowest boards. A thing stacked on another "
        "of its kind lies above it, two side by side on one support reach equally low, a "
        "wall stands on the floor.")
    merge_parts_explained: bool = param(
        True, "A part resting on an id of its own kind merges with it even when narrow "
        "(merge_parts_every) where its mean mask embedding is that id's label and nothing "
        "else (semantics.support_min_residual: what is left once the label's direction is "
        "out fits no other prompt): a piece a segmenter cut off a mug, resting on the "
        "mug, or off the floor. A mug on a table that its views embed as the table keeps "
        "a direction of its own and its id. Needs a vocabulary.")
    merge_pending_parts: bool = param(
        True, "At the looks of merge_parts_every, the same part rules judge each pending "
        "part (see part_min_share) against the id it is shown as: a piece a segmenter cuts "
        "off a settled object in some views (a duck's head at the neck) merges back while "
        "still shown as that object, instead of being released on views that show it "
        "apart and merged back a few frames later (two id changes of the object). At the "
        "first look that finds it so: merge_parts_hold_frames guards what outputs show.")
    smooth_weight: float = param(1.0, "How much a 'smooth' view counts towards merging: two "
                                 "touching ids in different masks whose image boundary has "
                                 "(almost) no depth edge (share < smooth_edge_share) are one "
                                 "surface cut by the front-end, the error a real segmenter "
                                 "makes the same way in every view; 0 ignores such views.",
                                 minimum=0.0)
    smooth_edge_share: float = param(0.1, "A boundary with less than this share of its "
                                     "length on a depth edge is 'smooth' (see "
                                     "smooth_weight).", minimum=0.0, maximum=1.0)
    apart_edge_share: float = param(0.3, "'Apart' evidence for two touching ids counts only "
                                    "where at least this share of their image boundary lies "
                                    "on a depth edge (a front-end cut across one surface is "
                                    "no evidence of two objects).", minimum=0.0, maximum=1.0)
    boundary_end_px: int = param(2, "The share of a boundary on a depth edge (apart, "
                                 "smooth) is taken more than this many pixels from where "
                                 "a third region meets it: the two regions' silhouette is "
                                 "a depth edge, and on a short boundary (a small object "
                                 "cut in two) its ends alone would reach apart_edge_share. "
                                 "0: the whole boundary.", minimum=0)
    convex_seam_share: float = param(0.5, "With apart_at 'concave': two masks whose "
                                     "boundary runs along a convex crease (at least this "
                                     "share of it on an edge, almost none of it concave) "
                                     "are two faces of one object cut at its edge (a "
                                     "segmenter splits a box by its shading): 'smooth' "
                                     "evidence. Above 1: off.", minimum=0.0)
    # ---- id lifecycle
    release_min_apart: int = param(6, "A part split off an id (see 'one mask per id') "
                                   "shows as that id until seen apart from it in this many "
                                   "views, and apart >= merge_ratio * together.", minimum=1)
    confirm_frames: int = param(
        2, "Frames in which masks joined an id and the map showed it there (rendered on "
        "min_pixels or more), each within confirm_gap_frames of the one before, before it "
        "counts: a fragment masks joined a few times whose votes other ids outvote stays "
        "out of the outputs. A new object is shown one frame after its second join.",
        minimum=1)
    confirm_gap_frames: int = param(
        10, "The frames that confirm an id must come in one run: each within this many "
        "integrated frames of the one before. A segmenter's error that labels a piece "
        "of a surface in one view, and again when the camera returns to that view, is "
        "not an object seen on a pass (a room walked twice: 15 confirmed instances "
        "instead of 35). 0: however far apart.", minimum=0)
    min_shown_share: float = param(
        0.5, "A confirmed id counts while the map shows it (rendered on min_pixels or "
        "more) in at least this share of the views that see min_pixels of the voxels "
        "holding its votes: a fragment other ids outvote wherever the camera sees it is "
        "no instance, until the map shows it again. 0: off.", minimum=0.0, maximum=1.0)
    ghost_visible_frames: int = param(5, "An unconfirmed id visible this often is deleted.",
                                      minimum=1)
    # ---- InstanceLoc
    localize: MaskVoteConfig = dataclasses.field(default_factory=MaskVoteConfig)
    # ---- change detection
    changes: ChangeConfig = dataclasses.field(default_factory=ChangeConfig)
