"""Fréchet Video Distance: I3D features of two sets of videos, and the Fréchet distance of their Gaussians.

The extractor is the TorchScript I3D that StyleGAN-V, Latte and most video papers use
(i3d_torchscript.pt: Kinetics-400, 400 features before the softmax), loaded from a local file;
nothing is downloaded at run time. The protocol is fixed here and written beside every number,
because FVD figures compare only under the same one: each video is resampled to FVD_FRAMES
evenly spaced frames (frames repeat when the clip is shorter), its shorter side resized to
FVD_SIZE (bilinear, antialiased), centre-cropped to FVD_SIZE x FVD_SIZE and scaled to [-1, 1];
the detector is then called with rescale=False, resize=False, return_features=True.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from opensora.errors import UserError

FVD_FRAMES = 16
FVD_SIZE = 224


def protocol_text(detector_path: str, n_fake: int, n_real: int, reference: str) -> str:
    """The pinned protocol, in words, with the detector's file hash."""
    return (f"I3D {Path(detector_path).name} (sha256 {file_digest(detector_path)[:12]}); {n_fake} generated vs {n_real} "
            f"reference videos ({reference}); {FVD_FRAMES} evenly spaced frames (repeated when shorter), shorter side "
            f"resized to {FVD_SIZE} (bilinear, antialiased), centre crop {FVD_SIZE}x{FVD_SIZE}, values in [-1, 1]; "
            "Fréchet distance of the two feature Gaussians")


def file_digest(path: str) -> str:
    """sha256 of a file (identifies the detector in the protocol)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_i3d(path: str, device: torch.device) -> torch.jit.ScriptModule:
    """The TorchScript detector at `path` (TorchScript runs no pickled Python); a UserError naming --i3d."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"--i3d {path}: no such file; download StyleGAN-V's i3d_torchscript.pt where there is a network "
                        "and pass its path")
    try:
        return torch.jit.load(str(p), map_location=device).eval()
    except (RuntimeError, ValueError) as e:
        first = str(e).strip().splitlines()[0].split(". ")[0] if str(e).strip() else type(e).__name__
        raise UserError(f"--i3d {path}: not a TorchScript model ({first}); pass i3d_torchscript.pt") from None


def fvd_input(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (3, FVD_FRAMES, FVD_SIZE, FVD_SIZE) float in [-1, 1], as the protocol says."""
    import torch.nn.functional as F

    t, h, w = frames.shape[:3]
    idx = np.linspace(0, t - 1, FVD_FRAMES).round().astype(int)
    x = torch.from_numpy(np.ascontiguousarray(frames[idx])).permute(0, 3, 1, 2).float() / 255  # (F, 3, H, W)
    scale = FVD_SIZE / min(h, w)
    size = (max(FVD_SIZE, round(h * scale)), max(FVD_SIZE, round(w * scale)))
    x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    top, left = (size[0] - FVD_SIZE) // 2, (size[1] - FVD_SIZE) // 2
    x = x[:, :, top : top + FVD_SIZE, left : left + FVD_SIZE]
    return (x * 2 - 1).permute(1, 0, 2, 3).contiguous()


@torch.no_grad()
def i3d_features(detector, videos: list[np.ndarray], device: torch.device, batch_size: int = 8) -> np.ndarray:
    """(N, D) float64 features of `videos` (each (T, H, W, 3) uint8)."""
    feats = []
    for i in range(0, len(videos), batch_size):
        x = torch.stack([fvd_input(v) for v in videos[i : i + batch_size]]).to(device)
        feats.append(detector(x, rescale=False, resize=False, return_features=True).double().cpu().numpy())
    return np.concatenate(feats)


def gaussian_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean (D,) and covariance (D, D) of features (N, D), N >= 2."""
    return feats.mean(0), np.cov(feats, rowvar=False)


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) between two Gaussians.

    Written by hand on numpy's symmetric eigensolver rather than scipy's sqrtm: tr((S1 S2)^(1/2))
    equals the sum of the square roots of the eigenvalues of S1^(1/2) S2 S1^(1/2), which is
    symmetric positive semi-definite, so rounding cannot make the trace complex.
    """
    vals, vecs = np.linalg.eigh(sigma1)
    root1 = (vecs * np.sqrt(np.clip(vals, 0, None))) @ vecs.T
    inner = np.linalg.eigvalsh(root1 @ sigma2 @ root1)
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.sqrt(np.clip(inner, 0, None)).sum())


def fvd(real_feats: np.ndarray, fake_feats: np.ndarray) -> float:
    """FVD between two sets of I3D features."""
    return frechet_distance(*gaussian_stats(real_feats), *gaussian_stats(fake_feats))
