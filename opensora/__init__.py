"""opensora: captioned videos to a trained text-to-video diffusion model."""

__version__ = "0.1.0"
