"""Settings of the data stages (`data download`, `data collate`, `data encode`): the schema of their
flags, config keys and OPENSORA_* variables (see `opensora.schema`). Imported without torch."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from opensora.errors import ConfigError, UserError
from opensora.schema import field_problems, setting
from opensora.text import DEFAULT_TEXT_ENCODER

if TYPE_CHECKING:
    from opensora.data.video import DecodeSettings

# Public copy of MSR-VTT (videos + annotation JSON) used by Frozen-in-Time, CLIP4Clip and others.
MSRVTT_URL = "https://www.robots.ox.ac.uk/~maxbain/frozen-in-time/data/MSRVTT.zip"
DATASETS = ("msrvtt", "shapes")  # what `data download` fetches (msrvtt) or generates offline (shapes)


@dataclass
class DownloadConfig:
    """Where an archive comes from and how it is checked; or the size of the generated shapes world."""

    dest: Path | None = setting(None, "Directory to download and extract into.", flag="--dest",
                                shown="HOME/downloads/DATASET")
    url: str = setting(MSRVTT_URL, "Archive URL (zip or tar).")
    sha256: str | None = setting(None, "Expected SHA-256 of the archive.", shown="not checked")
    size: int | None = setting(None, "Expected archive size in bytes.", ge=1, shown="not checked")
    stall_timeout: float = setting(60.0, "Stop (resumable) when under 1 KiB arrives in this many seconds.", gt=0)
    seed: int = setting(0, "shapes: seed of the generated world.", ge=0)
    videos_per_combo: int = setting(6, "shapes: clips per colour x shape x direction.", ge=1)

    def validate(self) -> None:
        """Raise one ConfigError listing every bad value."""
        problems = field_problems(self)
        if problems:
            raise ConfigError(problems)


@dataclass
class CollateConfig:
    """Where MSR-VTT was extracted and where its splits go."""

    dataset_dir: Path | None = setting(None, "Extracted MSR-VTT directory.", shown="HOME/downloads/msrvtt")
    out: Path | None = setting(None, "Output directory for the splits.", shown="HOME/collated/msrvtt")


@dataclass
class EncodeConfig:
    """Everything `encode_dataset` needs; the CLI fills it from flags, the environment and the user config."""

    captions: Path | None = setting(None, "Captions file: JSON list or JSONL of {file, captions}, or CSV with a "
                                    "header.", shown="required")
    videos: Path | None = setting(None, "Directory holding the videos named in the captions.", shown="required")
    out: Path | None = setting(None, "Output dataset directory.", shown="HOME/datasets/NAME")
    compression: str = setting("raw", "How videos are stored and what the model sees.",
                               choices="opensora.compression:COMPRESSIONS")
    vae: str | None = setting(None, "VAE/VQ-VAE hub id or local directory.", shown="the compression's own")
    text_encoder: str = setting(DEFAULT_TEXT_ENCODER, "Text encoder hub id or local directory: CLIP, T5, UMT5 or mT5 "
                                "(the family read from its config).")
    text_max_length: int | None = setting(None, "Tokens kept per caption.", ge=1,
                                          shown="the family's: CLIP 77 (its positions), T5 120")
    fps: float | None = setting(None, "Resample to this rate: each output time gets the frame shown then.", gt=0,
                                shown="the video's own")
    max_seconds: float | None = setting(20.0, "Clip limit in seconds (see --too-long).", gt=0)
    max_frames: int | None = setting(None, "Clip limit in output frames (see --too-long).", ge=1, shown="none")
    too_long: str = setting("skip", "A video over the clip limit: skip it, keep its first frames, or a center window.",
                            choices="opensora.data.video:TOO_LONG")
    size: str | None = setting(None, "Resize to exactly HEIGHTxWIDTH, ignoring the aspect ratio.", shown="keep as is")
    resolution: str | None = setting(None, "Resize keeping the aspect ratio into an aspect-ratio bucket of this "
                                     "area.", choices="opensora.data.video:RESOLUTIONS", shown="keep as is")
    max_pixels: int | None = setting(None, "Like --resolution, with the area in pixels.", ge=1, shown="keep as is")
    device: str = setting("auto", "Where the VAE and text encoder run: auto, cpu, cuda or cuda:N.")
    batch_size: int = setting(16, "Frames per VAE batch.", ge=1)
    num_workers: int = setting(2, "Decoding processes beside the encoder.", ge=0)
    shard_size: int = setting(32, "Videos per stored part (the unit of resumption).", ge=1)
    overwrite: bool = False  # delete OUT and start over (a flag, never a config default)
    file_column: str | None = setting(None, "CSV: the column naming the video.", shown="file, video, path or videoid")
    caption_column: str | None = setting(None, "CSV: the caption column.", shown="caption, text or name")
    reuse: tuple[Path, ...] = setting((), "Another encoded dataset whose stored latents and text features may be "
                                      "copied (repeatable).", shown="none")

    def validate(self) -> None:
        """Raise one ConfigError listing every bad value."""
        problems = field_problems(self)
        for name in ("captions", "videos"):
            if getattr(self, name) is None:
                problems.append(f"--{name} is required (or set encode.{name} in the config file)")
        if self.size is not None:
            try:
                self.size_hw()
            except UserError as e:
                problems.append(str(e))
        if sum(x is not None for x in (self.size, self.resolution, self.max_pixels)) > 1:
            problems.append("--size, --resolution and --max-pixels exclude each other; pass one")
        if self.too_long != "skip" and self.max_frames is None and self.max_seconds is None:
            problems.append(f"--too-long {self.too_long} needs --max-frames or --max-seconds")
        if problems:
            raise ConfigError(problems)

    def size_hw(self) -> tuple[int, int] | None:
        """--size as (height, width)."""
        if self.size is None:
            return None
        try:
            h, w = (int(x) for x in str(self.size).lower().split("x"))
            if h > 0 and w > 0:
                return h, w
        except ValueError:
            pass
        raise UserError(f"--size {self.size!r} must be HEIGHTxWIDTH, e.g. 256x256")

    def decode_settings(self) -> DecodeSettings:
        """How frames are taken from each video."""
        from opensora.data.video import RESOLUTIONS, DecodeSettings

        pixels = RESOLUTIONS[self.resolution] if self.resolution else self.max_pixels
        return DecodeSettings(fps=self.fps, max_frames=self.max_frames, max_seconds=self.max_seconds,
                              too_long=self.too_long, size=self.size_hw(), max_pixels=pixels)

    def settings(self) -> dict:
        """What the manifest records about how the dataset was made."""
        return {"captions": str(Path(self.captions).resolve()), "videos": str(Path(self.videos).resolve()),
                "compression": self.compression, "vae": self.vae, "text_encoder": self.text_encoder,
                "resolution": self.resolution, **self.decode_settings().to_dict()}
