"""Vision-language embeddings with open_clip, from a local checkpoint.

:class:`OpenClipEmbedder` gives

* one L2-normalised image embedding per mask of a label image: the mask's box, enlarged by
  a context margin and made square, cropped from the image; pixels outside the mask faded
  toward the model's mean colour; resized to the model's input size; encoded in batches;
* text embeddings: each text put into every prompt template ("a photo of a {}."), encoded,
  averaged and normalised (CLIP's prompt ensembling), kept in an LRU cache.

Any open_clip architecture works (``open_clip.list_models()``: ViT-B-32, ViT-B-16,
MobileCLIP-S1/S2, ...). Weights are only read from a local file; nothing is downloaded.
open_clip is imported lazily, inside the constructor.
"""
from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from panoptic_mapping.frontends.config import EmbedderConfig
from panoptic_mapping.core.device import resolve_device
from panoptic_mapping.frontends.segmenters import MissingWeightsError, check_weights_file

__all__ = ["OpenClipEmbedder", "open_clip_weight_source"]


def _import_open_clip() -> Any:
    try:
        import open_clip
    except ImportError as exc:
        raise ImportError("the embedder needs open_clip (optional extra 'clip'): "
                          "pip install 'panoptic_mapping[clip]' or pip install "
                          "open_clip_torch") from exc
    return open_clip


def open_clip_weight_source(model_name: str, max_tags: int = 3) -> str:
    """Where to get weights for ``model_name``, from open_clip's own (offline) registry."""
    open_clip = _import_open_clip()
    parts = []
    for tag in open_clip.list_pretrained_tags_by_model(model_name)[:max_tags]:
        cfg = open_clip.get_pretrained_cfg(model_name, tag)
        where = []
        if cfg.get("hf_hub"):
            where.append(f"https://huggingface.co/{cfg['hf_hub'].rstrip('/')} "
                         "(open_clip_pytorch_model.bin or open_clip_model.safetensors)")
        if cfg.get("url"):
            where.append(cfg["url"])
        parts.append(f"tag '{tag}': " + " or ".join(where))
    if not parts:
        return (f"open_clip weights for '{model_name}' (see open_clip.list_pretrained() and "
                "https://github.com/mlfoundations/open_clip, 'Pretrained models')")
    return (f"open_clip weights for '{model_name}' ({'; '.join(parts)}; all tags: "
            "open_clip.list_pretrained(), https://github.com/mlfoundations/open_clip)")


def _reparameterize(model: torch.nn.Module) -> torch.nn.Module:
    """Fold the training-time branches of re-parameterisable image towers (MobileCLIP's
    FastViT/MobileOne blocks) into single convolutions, as MobileCLIP prescribes for
    inference: same outputs, several times faster. Other models are returned unchanged."""
    if not any(hasattr(m, "reparameterize") for m in model.visual.modules()):
        return model
    from timm.utils.model import reparameterize_model

    model.visual = reparameterize_model(model.visual, inplace=True)
    return model


class OpenClipEmbedder:
    """Per-mask image embeddings and cached text embeddings from one open_clip model.

    Attributes:
        cfg: the embedder configuration.
        device: where the model runs.
        model: the open_clip model (eval mode).
        dim: embedding dimension D.
        image_size: (h, w) input size of the image tower.
        mean, std: (3, 1, 1) float tensors of the image normalisation.
    """

    def __init__(self, cfg: EmbedderConfig, device: torch.device | str | None = None) -> None:
        """Build ``cfg.model_name`` and load ``cfg.checkpoint`` (start-up; may take seconds).

        Raises:
            MissingWeightsError: the checkpoint is missing, unreadable, or not weights of
                ``cfg.model_name``.
            ValueError: unknown model name or pretrained tag.
        """
        open_clip = _import_open_clip()
        self.cfg = cfg
        self.device = resolve_device(device if device is not None else cfg.device)
        name = cfg.model_name
        if name not in open_clip.list_models():
            raise ValueError(f"unknown open_clip model '{name}' (embedder.model_name); "
                             f"known: {', '.join(open_clip.list_models())}")
        source = open_clip_weight_source(name)
        model_label = f"open_clip {name}"
        path = check_weights_file(cfg.checkpoint, model_label, source, "frontend.embedder.checkpoint")
        kwargs = self._tag_preprocessing(open_clip, name, cfg.pretrained_tag)
        try:
            model, _, _ = open_clip.create_model_and_transforms(
                name, pretrained=str(path), device=self.device, **kwargs)
        except Exception as exc:  # not a state dict, truncated, another architecture's
            raise MissingWeightsError(
                path, model_label, source,
                f"could not be loaded as {model_label} ({type(exc).__name__}: "
                f"{str(exc)[:300]}); check 'frontend.embedder.model_name'",
                "frontend.embedder.checkpoint") from exc
        self._setup(_reparameterize(model.eval()), open_clip.get_tokenizer(name),
                    open_clip.get_model_config(name)["embed_dim"])

    def _setup(self, model: torch.nn.Module, tokenizer: Any, dim: int) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.dim = int(dim)
        pre = model.visual.preprocess_cfg
        size = pre["size"]
        self.image_size = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = torch.tensor(pre["mean"], dtype=torch.float32,
                                 device=self.device).view(3, 1, 1)
        self.std = torch.tensor(pre["std"], dtype=torch.float32, device=self.device).view(3, 1, 1)
        self._interpolation = "bicubic" if pre.get("interpolation") == "bicubic" else "bilinear"
        self._text_cache: OrderedDict[tuple[str, tuple[str, ...]], np.ndarray] = OrderedDict()
        self._text_lock = threading.Lock()
        self.text_cache_hits = 0
        self.text_cache_misses = 0

    @staticmethod
    def _tag_preprocessing(open_clip: Any, name: str, tag: str) -> dict[str, Any]:
        """create_model kwargs that give the image preprocessing a pretrained tag trained
        with (MobileCLIP's checkpoints, e.g., expect no mean/std normalisation)."""
        if not tag:
            return {}
        pcfg = open_clip.get_pretrained_cfg(name, tag)
        if not pcfg:
            raise ValueError(f"unknown pretrained tag '{tag}' for open_clip model '{name}' "
                             f"(embedder.pretrained_tag); known: "
                             f"{open_clip.list_pretrained_tags_by_model(name)}")
        kwargs: dict[str, Any] = {}
        for key, arg in (("mean", "image_mean"), ("std", "image_std"),
                         ("interpolation", "image_interpolation"),
                         ("resize_mode", "image_resize_mode")):
            if key in pcfg:
                kwargs[arg] = pcfg[key]
        if pcfg.get("quick_gelu"):
            kwargs["force_quick_gelu"] = True
        return kwargs

    # ------------------------------------------------------------------ images

    def mask_crops(self, rgb: np.ndarray, labels: np.ndarray,
                   ids: Sequence[int] | None = None) -> torch.Tensor:
        """The normalised model inputs of the masks (what :meth:`embed_masks` encodes).

        Args:
            rgb: (H, W, 3) uint8.
            labels: (H, W) int label image, ids 1..M.
            ids: which mask ids (default: all 1..M).

        Returns:
            (len(ids), 3, h, w) float32 on the embedder's device.
        """
        prepared = self._prepare(rgb, labels)
        ids = range(1, len(prepared[2]) + 1) if ids is None else ids
        return self._crops(prepared, ids)

    def _prepare(self, rgb: np.ndarray, labels: np.ndarray
                 ) -> tuple[torch.Tensor, torch.Tensor, list]:
        """Once per frame: (3, H, W) [0, 1] image and (H, W) labels on the device, and the
        bounding slices of ids 1..M."""
        image = torch.from_numpy(np.ascontiguousarray(rgb)).to(self.device)
        image = image.permute(2, 0, 1).float().div_(255.0)
        labels = np.ascontiguousarray(labels, dtype=np.int32)
        return image, torch.from_numpy(labels).to(self.device), ndimage.find_objects(labels)

    def _crops(self, prepared: tuple[torch.Tensor, torch.Tensor, list],
               ids: Sequence[int]) -> torch.Tensor:
        """(len(ids), 3, h, w) normalised crops of the given mask ids."""
        image, lab, slices = prepared
        crops = [self._crop(image, lab, int(i), slices[int(i) - 1]) for i in ids]
        if not crops:
            return torch.zeros((0, 3, *self.image_size), device=self.device)
        return (torch.stack(crops) - self.mean) / self.std

    def _crop(self, image: torch.Tensor, labels: torch.Tensor, mask_id: int,
              sl: tuple[slice, slice] | None) -> torch.Tensor:
        """(3, h, w) crop of one mask in [0, 1] colour, before normalisation.

        The box is enlarged by ``context_margin`` of its longer side on every side and
        made square (no aspect distortion); what falls outside the image is mean colour.
        """
        if sl is None:  # an id without pixels: an all-mean input (its embedding is junk,
            return self.mean.expand(3, *self.image_size).clone()  # but rows stay aligned)
        H, W = labels.shape
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        side = int(round(max(y1 - y0, x1 - x0) * (1.0 + 2.0 * self.cfg.context_margin)))
        side = max(side, 1)
        top = (y0 + y1 - side) // 2
        left = (x0 + x1 - side) // 2
        iy0, iy1 = max(top, 0), min(top + side, H)
        ix0, ix1 = max(left, 0), min(left + side, W)
        patch = image[:, iy0:iy1, ix0:ix1]
        inside = labels[iy0:iy1, ix0:ix1] == mask_id
        blend = self.cfg.background_blend
        faded = patch * (1.0 - blend) + self.mean * blend
        patch = torch.where(inside[None], patch, faded)
        canvas = self.mean.expand(3, side, side).clone()
        canvas[:, iy0 - top:iy1 - top, ix0 - left:ix1 - left] = patch
        out = F.interpolate(canvas[None], size=self.image_size, mode=self._interpolation,
                            antialias=True, align_corners=False)[0]
        return out.clamp_(0.0, 1.0)

    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor) -> torch.Tensor:
        """(B, 3, h, w) normalised inputs -> (B, D) float32 L2-normalised embeddings."""
        feats = self.model.encode_image(batch.to(self.device)).float()
        return F.normalize(feats, dim=-1)

    def embed_masks(self, rgb: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """One image embedding per mask.

        Args:
            rgb: (H, W, 3) uint8.
            labels: (H, W) int label image with compact ids 1..M (0 = none).

        Returns:
            (M, D) float32, L2-normalised rows; row i belongs to mask i + 1.
        """
        n = int(np.max(labels, initial=0))
        out = np.zeros((n, self.dim), np.float32)
        step = self.cfg.batch_size
        with torch.inference_mode():
            prepared = self._prepare(rgb, labels)
            for start in range(0, n, step):
                ids = range(start + 1, min(start + step, n) + 1)
                batch = self._crops(prepared, ids)
                out[start:start + len(ids)] = self.encode_images(batch).cpu().numpy()
        return out

    # ------------------------------------------------------------------ text

    def embed_text(self, texts: Sequence[str],
                   templates: Sequence[str] | None = None) -> np.ndarray:
        """Text embeddings with prompt ensembling, cached.

        Args:
            texts: N queries, e.g. ["mug", "drawer handle"].
            templates: prompt templates with one "{}" (default: ``cfg.prompt_templates``);
                an empty list encodes the texts as they are.

        Returns:
            (N, D) float32 L2-normalised rows.
        """
        templates = tuple(self.cfg.prompt_templates if templates is None else templates)
        if not texts:
            return np.zeros((0, self.dim), np.float32)
        with self._text_lock:
            missing = [t for t in dict.fromkeys(texts) if (t, templates) not in self._text_cache]
            self.text_cache_misses += len(missing)
            self.text_cache_hits += len(texts) - len(missing)
            fresh = dict(zip(missing, self._encode_texts(missing, templates))) if missing else {}
            rows = []
            for t in texts:
                vec = fresh.get(t)
                if vec is None:
                    vec = self._text_cache[(t, templates)]
                    self._text_cache.move_to_end((t, templates))
                rows.append(vec)
            for t, vec in fresh.items():
                self._remember((t, templates), vec)
            return np.stack(rows).astype(np.float32)

    def _remember(self, key: tuple[str, tuple[str, ...]], vec: np.ndarray) -> None:
        if self.cfg.text_cache_size <= 0:
            return
        self._text_cache[key] = vec
        while len(self._text_cache) > self.cfg.text_cache_size:
            self._text_cache.popitem(last=False)

    @torch.inference_mode()
    def _encode_texts(self, texts: Sequence[str], templates: tuple[str, ...]) -> np.ndarray:
        """(N, D) normalised mean of the normalised template embeddings of each text."""
        per_text = len(templates) or 1
        prompts = [tpl.format(t) for t in texts for tpl in templates] if templates else list(texts)
        tokens = self.tokenizer(prompts).to(self.device)
        feats = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
        feats = feats.view(len(texts), per_text, -1).mean(1)
        return F.normalize(feats, dim=-1).cpu().numpy()

    def clear_text_cache(self) -> None:
        with self._text_lock:
            self._text_cache.clear()

