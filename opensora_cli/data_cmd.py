"""`opensora data`: download, collate and encode datasets."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from opensora.data.collate import collate_msrvtt
from opensora.data.download import MSRVTT_URL, download_dataset, remove_partial
from opensora.errors import UserError
from opensora_cli import choices
from opensora_cli.render import console, next_line, progress_bars, table
from opensora_cli.settings import Settings, default_help

app = typer.Typer(help="Download, collate and encode video datasets.", no_args_is_help=True)


@app.command()
def download(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="msrvtt (download) or shapes (generated offline).")] = "msrvtt",
    dest: Annotated[Path | None, typer.Option("--dest", "--out", "-o", help="Directory to download and extract into.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Archive URL (zip or tar).")] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected SHA-256 of the archive.")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Expected archive size in bytes.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if complete.")] = False,
    stall_timeout: Annotated[float, typer.Option("--stall-timeout", help="Stop (resumable) when under 1 KiB arrives in this many seconds.")] = 60.0,
    seed: Annotated[int, typer.Option("--seed", help="shapes: seed of the generated world.")] = 0,
    videos_per_combo: Annotated[int, typer.Option("--videos-per-combo", help="shapes: clips per colour x shape x direction.")] = 6,
) -> None:
    """Download MSR-VTT (resumable, checksummed) and extract it safely, or generate the shapes world.

    Rerun the same command after an interruption to resume. Without --dest the data goes to
    HOME/downloads/DATASET (see `opensora config show`). `shapes` needs no network: coloured shapes
    moving left/right/up/down, in MSR-VTT's layout, with some combinations held out (split "test").

    [bold]Examples[/bold]
      opensora data download --dest ~/data/msrvtt
      opensora data download shapes --dest ~/data/shapes
    """
    s: Settings = ctx.obj
    if not math.isfinite(stall_timeout) or stall_timeout <= 0:
        raise UserError(f"--stall-timeout {stall_timeout} must be a finite number of seconds > 0")
    for opt, value, low in (("--size", size, 1), ("--videos-per-combo", videos_per_combo, 1), ("--seed", seed, 0)):
        if value is not None and value < low:
            raise UserError(f"{opt} {value} must be at least {low}")
    if dataset not in ("msrvtt", "shapes"):
        raise UserError(f"unknown dataset {dataset!r}; choose msrvtt or shapes")
    dest = dest or s.home / "downloads" / dataset
    if dataset == "shapes":
        from opensora.data.shapes import WorldConfig, generate_world

        with progress_bars() as progress:
            w = generate_world(dest, WorldConfig(seed=seed, videos_per_combo=videos_per_combo), progress)
        console.print(f"generated {w.videos} videos, {w.captions} captions in {w.root}")
        console.print(f"held out of training (split test): {', '.join(w.held_out)}")
        next_line(f"opensora data collate -d {dest}")
        return
    url = s.get("download.url", url) or MSRVTT_URL
    if force:
        remove_partial(dest)
    with progress_bars() as progress:
        r = download_dataset(dest, url=url, sha256=sha256, size=size, progress=progress, stall_seconds=stall_timeout)
    if r.skipped:
        console.print(f"already complete: {r.dest} ({r.bytes:,} bytes, sha256 {r.sha256[:16]}…)")
    else:
        resumed = f", resumed at {r.resumed_from:,} bytes" if r.resumed_from else ""
        console.print(f"downloaded {r.archive} ({r.bytes:,} bytes{resumed}), sha256 {r.sha256}")
        console.print(f"extracted into {r.dest}")
    next_line(f"opensora data collate -d {r.dest}")


@app.command()
def collate(
    ctx: typer.Context,
    dataset_dir: Annotated[
        Path | None, typer.Option("--dataset-dir", "-d", help="Extracted MSR-VTT directory.")
    ] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output directory for the splits.")] = None,
) -> None:
    """Turn MSR-VTT's official layout into OUT/{train,val,test}/annotations.json + videos/.

    [bold]Example[/bold]: opensora data collate -d ~/data/msrvtt -o ~/data/msrvtt-collated
    """
    s: Settings = ctx.obj
    dataset_dir = dataset_dir or s.home / "downloads" / "msrvtt"
    out = out or s.home / "collated" / "msrvtt"
    with progress_bars() as progress:
        r = collate_msrvtt(dataset_dir, out, progress=progress)
    rows = [(split, r.videos[split], r.captions[split]) for split in sorted(r.videos)]
    console.print(table(f"collated into {r.out}", rows, ("split", "videos", "captions")))
    if r.copied:
        console.print(f"[yellow]{r.copied} videos were copied because links failed[/yellow]")
    for label, items in (("videos without captions", r.without_captions), ("captions without video", r.without_video)):
        if items:
            shown = ", ".join(items[:10]) + (" …" if len(items) > 10 else "")
            console.print(f"[yellow]{len(items)} {label}:[/yellow] {escape(shown)}")
    # the split to train on: "train" when there is one ("test" sorts first)
    first = "train" if "train" in r.videos or not r.videos else sorted(r.videos)[0]
    next_line(f"opensora data encode -c {r.out / first / 'annotations.json'} -v {r.out / first / 'videos'}")


def _parse_size(size: str | None) -> tuple[int, int] | None:
    if size is None:
        return None
    try:
        h, w = (int(x) for x in size.lower().split("x"))
        if h > 0 and w > 0:
            return h, w
    except ValueError:
        pass
    raise UserError(f"--size {size!r} must be HEIGHTxWIDTH, e.g. 256x256")


@app.command()
def encode(
    ctx: typer.Context,
    captions: Annotated[Path, typer.Option("--captions", "-c", help="Captions file: JSON list or JSONL of {file, captions}, or CSV with a header.")],
    videos: Annotated[Path, typer.Option("--videos", "-v", help="Directory holding the videos named in the captions.")],
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Output dataset directory \\[default: HOME/datasets/NAME].")] = None,
    compression: Annotated[str | None, typer.Option("--compression", autocompletion=choices.complete_compression, help="raw | vqvae | sdvae." + default_help("encode.compression"))] = None,
    vae: Annotated[str | None, typer.Option("--vae", help="VAE/VQ-VAE hub id or local directory." + default_help("encode.vae"))] = None,
    text_encoder: Annotated[str | None, typer.Option("--text-encoder", help="CLIP hub id or local directory." + default_help("encode.text_encoder"))] = None,
    fps: Annotated[float | None, typer.Option("--fps", help="Resample to this rate: each output time gets the frame shown then" + default_help("encode.fps"))] = None,
    max_seconds: Annotated[float | None, typer.Option("--max-seconds", help="Clip limit in seconds (see --too-long)." + default_help("encode.max_seconds"))] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames", help="Clip limit in output frames (see --too-long)." + default_help("encode.max_frames"))] = None,
    too_long: Annotated[str, typer.Option("--too-long", autocompletion=choices.complete_too_long, help="A video over the clip limit: skip it, keep its first frames, or a center window.")] = "skip",
    resolution: Annotated[str | None, typer.Option("--resolution", autocompletion=choices.complete_resolution, help="Resize keeping the aspect ratio into an aspect-ratio bucket of this area: 144p | 240p | 360p | 480p | 720p | 1080p.")] = None,
    max_pixels: Annotated[int | None, typer.Option("--max-pixels", help="Like --resolution, with the area in pixels.")] = None,
    size: Annotated[str | None, typer.Option("--size", help="Resize to exactly HEIGHTxWIDTH, ignoring the aspect ratio \\[default: keep as is].")] = None,
    file_column: Annotated[str | None, typer.Option("--file-column", help="CSV: the column naming the video \\[default: file, video, path or videoid].")] = None,
    caption_column: Annotated[str | None, typer.Option("--caption-column", help="CSV: the caption column \\[default: caption, text or name].")] = None,
    reuse: Annotated[list[Path] | None, typer.Option("--reuse", help="Another encoded dataset whose stored latents and text features may be copied (repeatable).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="cpu | cuda | auto." + default_help("encode.device"))] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size", help="Frames per VAE batch." + default_help("encode.batch_size"))] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers", help="Decoding processes beside the encoder." + default_help("encode.num_workers"))] = None,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Videos per stored part (the unit of resumption).")] = 32,
    overwrite: Annotated[bool, typer.Option("--overwrite", help="Delete OUT and start over.")] = False,
) -> None:
    """Encode videos + captions into a dataset: each video latent and each caption's features stored once.

    Frames are decoded upright (the container's rotation applied). Each video is cropped to the
    compression's stride; training crops latents further to the model's patch (centre crop).
    --resolution/--max-pixels keep the aspect ratio and snap each video to one of a few
    aspect-ratio buckets (sides multiples of 16 px), so a mixed set trains in a few shapes.

    Work is keyed by content: rerun the same command after a crash, or with an edited captions
    file, another --text-encoder or --vae, and only what is new is encoded. Bad videos, and clips
    too small for any model, are skipped and listed in OUT/errors.jsonl; the exit code is 0 only if
    every pair was encoded or deliberately filtered (too long, too small).

    [bold]Examples[/bold]
      opensora data encode -c captions.json -v videos/ -o out/
      opensora data encode -c webvid.csv -v videos/ -o out/ --resolution 240p --fps 8 --max-frames 16 --too-long center
    """
    from opensora.data.encode import EncodeConfig, encode_dataset
    from opensora.devices import resolve_device

    s: Settings = ctx.obj
    comp = s.get("encode.compression", compression)
    if out is None:
        name = f"{captions.resolve().parent.name or 'dataset'}-{comp}"
        out = s.home / "datasets" / name
        console.print(f"output: {out} (default under HOME/datasets; pass -o to choose)")
    cfg = EncodeConfig(
        captions=captions, videos=videos, out=out, compression=comp, vae=s.get("encode.vae", vae),
        text_encoder=s.get("encode.text_encoder", text_encoder), fps=s.get("encode.fps", fps),
        max_seconds=s.get("encode.max_seconds", max_seconds), max_frames=s.get("encode.max_frames", max_frames),
        too_long=too_long, size=_parse_size(size), resolution=resolution, max_pixels=max_pixels,
        device=str(resolve_device(s.get("encode.device", device))),
        batch_size=s.get("encode.batch_size", batch_size), num_workers=s.get("encode.num_workers", num_workers),
        shard_size=shard_size, overwrite=overwrite, file_column=file_column, caption_column=caption_column,
        reuse=tuple(reuse or ()),
    )
    with progress_bars() as progress:
        r = encode_dataset(cfg, progress=progress)
    rows = [("pairs", r.pairs), ("rows written", r.written), ("filtered (too long/small)", r.filtered),
            ("failed", r.failed), ("videos stored", f"{r.videos} ({_size(r.video_bytes)})"),
            ("captions stored", f"{r.captions} ({_size(r.text_bytes)})"),
            ("videos encoded / reused", f"{r.videos_encoded} / {r.videos_reused}"),
            ("captions encoded / reused", f"{r.texts_encoded} / {r.texts_reused}")]
    console.print(table(f"encoded into {r.out}", rows))
    for d in r.damaged:
        console.print(f"[yellow]redone a damaged part[/yellow] {escape(d)}")
    if r.shapes:
        console.print(table("latent shapes", sorted(r.shapes.items()), ("shape", "rows")))
    for e in r.errors[:20]:
        console.print(f"[yellow]skipped[/yellow] {escape(e['file'])} ({e['pairs']} pair{'s' if e['pairs'] != 1 else ''}): "
                      + escape(f"{e['reason']} {e['detail']}".rstrip()))
    if len(r.errors) > 20:
        console.print(f"… and {len(r.errors) - 20} more")
    if r.errors:
        console.print(f"all skipped videos: {r.out / 'errors.jsonl'}")
    next_line(f"opensora train --data {r.out}")
    if not r.ok:
        raise typer.Exit(1)


def _size(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)
