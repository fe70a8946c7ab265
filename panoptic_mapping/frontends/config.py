"""Configuration of the 2D front-ends: segmenter, vision-language embedder, worker thread.

Every field is declared with :func:`panoptic_mapping.core.config.param`, so these
dataclasses nest into the root configuration (and ``config/mapping.yaml``, the ROS
parameters and their validation) like every other section. Nested sections
(``segmenter.fastsam.imgsz``) are plain dataclass fields with a default factory.

Model weights are never downloaded: a model front-end needs a local checkpoint file
(see README, "Front-ends and model weights"); without one the weights-free classical
segmenter is used.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from panoptic_mapping.params import param

__all__ = [
    "ClassicalConfig",
    "GeometricConfig",
    "FastSAMConfig",
    "SAMConfig",
    "SegmenterConfig",
    "EmbedderConfig",
    "WorkerConfig",
    "DEFAULT_PROMPT_TEMPLATES",
]

SEGMENTER_KINDS = ("auto", "classical", "geometric", "fastsam", "sam")
SAM_MODEL_TYPES = ("vit_b", "vit_l", "vit_h")
DEVICES = ("auto", "cpu", "cuda")

# CLIP-style prompt ensemble; "{}" is replaced by the queried text.
DEFAULT_PROMPT_TEMPLATES = [
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a photo of a {} in a room.",
]


@dataclass
class ClassicalConfig:
    """The weights-free scikit-image segmenter (used when no model file is configured)."""

    method: str = param("felzenszwalb", "Colour over-segmentation: 'felzenszwalb' (graph "
                        "based) or 'slic' (k-means superpixels).",
                        choices=("felzenszwalb", "slic"))
    scale: float = param(150.0, "Felzenszwalb scale: larger values give larger regions.",
                         minimum=0.0)
    sigma: float = param(0.5, "Felzenszwalb Gaussian pre-smoothing, in pixels.", minimum=0.0)
    fz_min_size: int = param(30, "Felzenszwalb minimum component size, in pixels.", minimum=1)
    n_segments: int = param(100, "SLIC: approximate number of superpixels.", minimum=1)
    compactness: float = param(10.0, "SLIC: colour versus space weight (larger is squarer).",
                               minimum=0.0)
    use_depth: bool = param(True, "Split regions across depth discontinuities when the frame "
                            "has depth.")
    depth_jump_m: float = param(0.03, "Depth discontinuity threshold, absolute part, in "
                                "metres.", minimum=0.0)
    depth_jump_rel: float = param(0.03, "Depth discontinuity threshold, part relative to the "
                                  "nearer depth.", minimum=0.0)
    ignore_invalid_depth: bool = param(True, "Pixels without depth (0) get no mask.")
    max_side_px: int = param(
        160, "An image longer than this along its longer side is segmented at the smallest "
        "integer downscale that fits (colour averaged over blocks, depth sampled at their "
        "centres) and its masks scaled back: Felzenszwalb's scale and minimum sizes and "
        "min_area count pixels and were chosen at 160x120, and the cost grows with the "
        "pixels. Measured (BENCHMARKS.md): a real 7-Scenes kitchen at 320x240 gave 412 "
        "confirmed instances segmented whole, 124 at 160; a 640x480 tabletop PQ_scene "
        "0.35 whole, 0.55 at 320, 0.66 at 160; 871 -> 261 ms a 640x480 frame in the node "
        "at 320. 0: always the full size.", minimum=0)


@dataclass
class GeometricConfig:
    """The weights-free geometric RGB-D segmenter (depth discontinuities, concave creases,
    support planes; after voxblox++'s geometric segmentation). It needs depth."""

    smooth_max_radius_px: int = param(3, "Largest radius of the smoothing of depth within "
                                      "its own surface before normals and boundaries "
                                      "(inverse depth averaged over neighbours within "
                                      "jump_rel). Each frame takes the smallest radius that "
                                      "keeps the normals' tilt from the depth's noise "
                                      "(estimated from the frame) under plane_angle_deg "
                                      "(the plane inliers' tolerance): a real sensor's noise "
                                      "at 2 m exceeds the spacing of neighbouring points; "
                                      "clean depth is not smoothed. 0 = never.", minimum=0)
    normal_step: int = param(1, "Pixels between the points differenced for a surface "
                             "normal (larger smooths sensor noise, blurs small objects).",
                             minimum=1)
    jump_rel: float = param(0.03, "Depth discontinuity: the depth step between neighbours "
                            "and a point's distance to the other's tangent plane both exceed "
                            "this times the depth (a slanted plane has no discontinuity).",
                            minimum=0.0)
    concave: bool = param(True, "Also cut where the surface folds inwards between "
                          "neighbours: a concave crease (an object standing on a surface) "
                          "or a fold where one surface passes behind another.")
    concave_angle_deg: float = param(75.0, "Concave crease: the normals of the two sides "
                                     "differ by more than this angle (smaller angles also "
                                     "split self-concave objects: ducks, shelves).",
                                     minimum=0.0, maximum=180.0)
    planes: bool = param(True, "Detect large planes (floor, walls, table tops) and return "
                         "each as one mask flagged as a plane (stuff), even where objects "
                         "split it in the image.")
    plane_min_fraction: float = param(0.04, "Smallest plane, as a fraction of the image's "
                                      "pixels.", minimum=0.0, maximum=1.0)
    plane_dist_rel: float = param(0.01, "Plane inlier: distance to the plane under this "
                                  "times the depth.", minimum=0.0)
    plane_angle_deg: float = param(15.0, "Plane inlier: normal within this angle of the "
                                   "plane's.", minimum=0.0, maximum=90.0)
    under_share: float = param(0.8, "A piece behind a plane joins it (a table's apron and "
                               "legs under its top) only when this share of its points, "
                               "seen along the plane's normal, lies inside the plane's "
                               "outline; a surface behind a plane that reaches beyond it "
                               "(a wall behind a cabinet front) stays a mask of its own.",
                               minimum=0.0, maximum=1.0)
    max_planes: int = param(6, "Most planes per image.", minimum=0)
    plane_hypotheses: int = param(64, "RANSAC hypotheses per plane.", minimum=1)
    without_depth: str = param("classical", "A frame without depth: 'classical' segments "
                               "it with the classical segmenter (a warning is logged "
                               "once), 'error' raises ValueError.",
                               choices=("classical", "error"))


@dataclass
class FastSAMConfig:
    """FastSAM (ultralytics, AGPL-3.0, optional extra 'fastsam') in 'everything' mode."""

    imgsz: int = param(640, "Network input size (longest side, multiple of 32).", minimum=32)
    conf: float = param(0.4, "Minimum mask confidence.", minimum=0.0, maximum=1.0)
    iou: float = param(0.9, "IoU threshold of the non-maximum suppression between masks.",
                       minimum=0.0, maximum=1.0)
    retina_masks: bool = param(True, "Compute masks at the image resolution (sharper, "
                               "slower) instead of upsampling the network's masks.")
    max_det: int = param(300, "Maximum number of masks per image.", minimum=1)
    half: bool = param(False, "Half precision on a GPU (ignored on the CPU).")


@dataclass
class SAMConfig:
    """Segment Anything's automatic mask generator (segment-anything, Apache-2.0)."""

    model_type: str = param("vit_b", "Image encoder of the checkpoint: vit_b, vit_l or vit_h "
                            "(it must match the file).", choices=SAM_MODEL_TYPES)
    points_per_side: int = param(16, "Grid of point prompts per image side (16 -> 256 "
                                 "prompts; SAM's default is 32).", minimum=1)
    points_per_batch: int = param(64, "Point prompts decoded at once (memory versus speed).",
                                  minimum=1)
    pred_iou_thresh: float = param(0.88, "Minimum predicted mask IoU.", minimum=0.0,
                                   maximum=1.0)
    stability_score_thresh: float = param(0.95, "Minimum stability score of a mask.",
                                          minimum=0.0, maximum=1.0)
    box_nms_thresh: float = param(0.7, "Box IoU threshold of the non-maximum suppression "
                                  "between masks.", minimum=0.0, maximum=1.0)
    crop_n_layers: int = param(0, "Extra layers of image crops (0 = whole image only; each "
                               "layer costs several more encoder passes).", minimum=0)


@dataclass
class SegmenterConfig:
    """The class-agnostic segmenter: image -> non-overlapping masks with scores."""

    kind: str = param("auto", "Segmenter: 'classical' (scikit-image, no weights), "
                      "'geometric' (depth edges, creases and planes, no weights, needs "
                      "depth), 'fastsam', 'sam', or 'auto' (classical without a checkpoint; "
                      "with one, fastsam for a .pt file and sam for a .pth file).",
                      choices=SEGMENTER_KINDS)
    checkpoint: str = param("", "Path of the model's weights file (FastSAM-s.pt, "
                            "FastSAM-x.pt, sam_vit_b_01ec64.pth, ...); '~' is expanded. "
                            "Empty: no model (classical).")
    device: str = param("auto", "Where the model runs: 'auto' (GPU when present), 'cpu' or "
                        "'cuda'.", choices=DEVICES)
    min_area: int = param(30, "Smallest mask kept, in pixels (after overlaps are resolved).",
                          minimum=1)
    fill_holes: bool = param(True, "Fill holes inside a mask that no other mask covers.")
    refine_depth_edges: bool = param(False, "With depth, cut every mask across depth "
                                     "discontinuities (image-only masks bleed onto the "
                                     "surface behind an object): pieces under min_area go "
                                     "to a neighbour on the same surface. Not used by "
                                     "'geometric' (its masks already follow depth).")
    refine_jump_rel: float = param(0.03, "Refinement's depth discontinuity threshold, "
                                   "relative to the depth (with intrinsics also a point's "
                                   "distance to its neighbour's tangent plane).", minimum=0.0)
    refine_creases: bool = param(False, "Refinement also cuts along concave creases (needs "
                                 "intrinsics), e.g. a mask spilling from an object onto the "
                                 "table it stands on.")
    classical: ClassicalConfig = field(default_factory=ClassicalConfig)
    geometric: GeometricConfig = field(default_factory=GeometricConfig)
    fastsam: FastSAMConfig = field(default_factory=FastSAMConfig)
    sam: SAMConfig = field(default_factory=SAMConfig)


@dataclass
class EmbedderConfig:
    """Open-vocabulary embeddings with open_clip (image per mask, and text)."""

    enabled: bool = param(False, "Compute a vision-language embedding per mask (needs "
                          "'checkpoint'); without it the map has no open-vocabulary "
                          "semantics.")
    model_name: str = param("ViT-B-32", "open_clip architecture name (open_clip.list_models(), "
                            "e.g. ViT-B-32, ViT-B-16, MobileCLIP-S1, MobileCLIP-S2); it must "
                            "match the checkpoint.")
    checkpoint: str = param("", "Path of the open_clip weights file for 'model_name' "
                            "(e.g. open_clip_pytorch_model.bin); '~' is expanded.")
    pretrained_tag: str = param("", "open_clip pretrained tag the checkpoint was trained as "
                                "(open_clip.list_pretrained(), e.g. 'laion2b_s34b_b79k', "
                                "'datacompdr'): selects that tag's image normalisation (read "
                                "offline, nothing is downloaded). Empty: the model's default.")
    device: str = param("auto", "Where the model runs: 'auto' (GPU when present), 'cpu' or "
                        "'cuda'.", choices=DEVICES)
    context_margin: float = param(0.25, "Context around a mask's box in its crop, as a "
                                  "fraction of the box's longer side on each side.",
                                  minimum=0.0, maximum=2.0)
    background_blend: float = param(0.5, "How far pixels of the crop outside the mask are "
                                    "faded to the model's mean colour (0 = full context, "
                                    "1 = mask only).", minimum=0.0, maximum=1.0)
    batch_size: int = param(32, "Mask crops encoded per forward pass.", minimum=1)
    prompt_templates: list[str] = param(
        DEFAULT_PROMPT_TEMPLATES, "Prompt templates for text queries, each with one '{}' for "
        "the text; the text embedding is the normalised mean over the templates.")
    text_cache_size: int = param(1024, "Text embeddings kept in the cache (least recently "
                                 "used are evicted).", minimum=0)


@dataclass
class WorkerConfig:
    """The thread that runs segmentation and embedding off the ROS callbacks."""

    queue_size: int = param(1, "Frames waiting for the worker; when full the oldest waiting "
                            "frame is dropped (counted and reported).", minimum=1)
    result_queue_size: int = param(8, "Results waiting for the mapper; when full the worker "
                                   "waits (and new frames are dropped at the input).",
                                   minimum=1)
    drop_report_period_s: float = param(5.0, "Dropped frames are logged at most this often "
                                        "(every drop is counted).", minimum=0.0)
    stats_window: int = param(500, "Frames in the latency statistics window.", minimum=1)
    stop_timeout_s: float = param(10.0, "How long stop() waits for the frame in progress.",
                                  minimum=0.0)
