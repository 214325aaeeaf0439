"""Frames given to the sampler: an image (image-to-video) or the end of a clip (extension), as latents.

The given frames fill the first frame groups of the latent (a group is the model's temporal patch):
one group for an image, which is repeated to the group's pixel frames; half of the groups, from the
clip's last frames, for an extension. They are resized to the video's size (centre crop to its
aspect ratio, then an antialiased bilinear resize) and encoded by the checkpoint's compression.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from opensora.errors import UserError


def fit_frames(frames: np.ndarray, height: int, width: int) -> np.ndarray:
    """(T, H, W, 3) uint8 centre-cropped to height:width and resized to (T, height, width, 3)."""
    import torch.nn.functional as F

    t, h, w = frames.shape[:3]
    if h * width > w * height:  # too tall: crop rows
        ch, cw = max(1, round(w * height / width)), w
    else:
        ch, cw = h, max(1, round(h * width / height))
    top, left = (h - ch) // 2, (w - cw) // 2
    x = torch.from_numpy(np.array(frames[:, top : top + ch, left : left + cw])).permute(0, 3, 1, 2).float()
    x = F.interpolate(x, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def read_image(path: Path) -> np.ndarray:
    """(1, H, W, 3) uint8 of an image file; a UserError naming --image otherwise."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))[None]
    except FileNotFoundError:
        raise UserError(f"--image {path}: no such file; pass a PNG, JPEG or WebP image") from None
    except (UnidentifiedImageError, OSError) as e:
        raise UserError(f"--image {path}: not an image PIL can read ({type(e).__name__}); pass a PNG, JPEG or WebP "
                        "image") from None


def given_latents(image: str | None, extend: str | None, compressor, patch: tuple[int, int, int],
                  latent_thw: tuple[int, int, int], height: int, width: int) -> torch.Tensor:
    """(1, C, Tg, H', W') clean latents of the given frames for a video of `latent_thw` (see the module docstring)."""
    from opensora.data.video import VideoError, read_video

    pt = patch[0]
    groups = latent_thw[0] // pt
    option = "--image" if image else "--extend"
    if groups < 2:
        raise UserError(f"{option}: the video has {groups} latent frame group; ask for more --frames so that there is "
                        "something to generate after the given frames")
    g = 1 if image else groups // 2
    tg = g * pt
    n = compressor.frames_for(tg) if compressor.causal else tg * compressor.stride[0]  # pixel frames given
    if image:
        frames = np.repeat(fit_frames(read_image(Path(image)), height, width), n, axis=0)
    else:
        try:
            clip, _ = read_video(Path(extend))
        except VideoError as e:
            raise UserError(f"--extend {extend}: {e}") from None
        if len(clip) < n:
            raise UserError(f"--extend {extend}: {len(clip)} frames, and continuing it takes its last {n}; pass a "
                            "longer clip or fewer --frames")
        frames = fit_frames(clip[-n:], height, width)
    stored = torch.from_numpy(np.ascontiguousarray(compressor.encode([frames])[0]))[None]
    return compressor.to_diffusion(stored)[:, :, :tg].float()  # (1, C, Tg, H', W')
