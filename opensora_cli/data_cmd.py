"""`opensora data`: download, collate and encode datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from opensora.data.collate import collate_msrvtt
from opensora.data.download import download_dataset, remove_partial
from opensora.errors import UserError
from opensora_cli.options import SettingsCommand
from opensora_cli.render import console, next_line, progress_bars, table
from opensora_cli.settings import Settings, build_config

app = typer.Typer(help="Download, collate and encode video datasets.", no_args_is_help=True)


@app.command(cls=SettingsCommand)
def download(
    ctx: typer.Context,
    dataset: Annotated[str, typer.Argument(help="msrvtt (download) or shapes (generated offline).")] = "msrvtt",
    dest: Annotated[Path | None, typer.Option("--dest", "--out", "-o")] = None,
    url: Annotated[str | None, typer.Option("--url")] = None,
    sha256: Annotated[str | None, typer.Option("--sha256")] = None,
    size: Annotated[int | None, typer.Option("--size")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if complete.")] = False,
    stall_timeout: Annotated[float | None, typer.Option("--stall-timeout")] = None,
    seed: Annotated[int | None, typer.Option("--seed")] = None,
    videos_per_combo: Annotated[int | None, typer.Option("--videos-per-combo")] = None,
) -> None:
    """Download MSR-VTT (resumable, checksummed) and extract it safely, or generate the shapes world.

    Rerun the same command after an interruption to resume. Without --dest the data goes to
    HOME/downloads/DATASET (see `opensora config show`). `shapes` needs no network: coloured shapes
    moving left/right/up/down, in MSR-VTT's layout, with some combinations held out (split "test").

    [bold]Examples[/bold]
      opensora data download --dest ~/data/msrvtt
      opensora data download shapes --dest ~/data/shapes
    """
    from opensora.data.config import DATASETS

    s: Settings = ctx.obj
    cfg = build_config(s, "download", ctx.params)
    cfg.validate()
    if dataset not in DATASETS:
        raise UserError(f"unknown dataset {dataset!r}; choose {' or '.join(DATASETS)}")
    dest = cfg.dest or s.home / "downloads" / dataset
    if dataset == "shapes":
        from opensora.data.world import WorldConfig, generate_world

        with progress_bars() as progress:
            w = generate_world(dest, WorldConfig(seed=cfg.seed, videos_per_combo=cfg.videos_per_combo), progress)
        console.print(f"generated {w.videos} videos, {w.captions} captions in {w.root}")
        console.print(f"held out of training (split test): {', '.join(w.held_out)}")
        next_line(f"opensora data collate -d {dest}")
        return
    if force:
        remove_partial(dest)
    with progress_bars() as progress:
        r = download_dataset(dest, url=cfg.url, sha256=cfg.sha256, size=cfg.size, progress=progress,
                             stall_seconds=cfg.stall_timeout)
    if r.skipped:
        console.print(f"already complete: {r.dest} ({r.bytes:,} bytes, sha256 {r.sha256[:16]}…)")
    else:
        resumed = f", resumed at {r.resumed_from:,} bytes" if r.resumed_from else ""
        console.print(f"downloaded {r.archive} ({r.bytes:,} bytes{resumed}), sha256 {r.sha256}")
        console.print(f"extracted into {r.dest}")
    next_line(f"opensora data collate -d {r.dest}")


@app.command(cls=SettingsCommand)
def collate(
    ctx: typer.Context,
    dataset_dir: Annotated[Path | None, typer.Option("--dataset-dir", "-d")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o")] = None,
) -> None:
    """Turn MSR-VTT's official layout into OUT/{train,val,test}/annotations.json + videos/.

    [bold]Example[/bold]: opensora data collate -d ~/data/msrvtt -o ~/data/msrvtt-collated
    """
    s: Settings = ctx.obj
    cfg = build_config(s, "collate", ctx.params)
    dataset_dir = cfg.dataset_dir or s.home / "downloads" / "msrvtt"
    out = cfg.out or s.home / "collated" / "msrvtt"
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


@app.command(cls=SettingsCommand)
def encode(
    ctx: typer.Context,
    captions: Annotated[Path | None, typer.Option("--captions", "-c")] = None,
    videos: Annotated[Path | None, typer.Option("--videos", "-v")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o")] = None,
    compression: Annotated[str | None, typer.Option("--compression")] = None,
    vae: Annotated[str | None, typer.Option("--vae")] = None,
    text_encoder: Annotated[str | None, typer.Option("--text-encoder")] = None,
    text_max_length: Annotated[int | None, typer.Option("--text-max-length")] = None,
    fps: Annotated[float | None, typer.Option("--fps")] = None,
    max_seconds: Annotated[float | None, typer.Option("--max-seconds")] = None,
    max_frames: Annotated[int | None, typer.Option("--max-frames")] = None,
    too_long: Annotated[str | None, typer.Option("--too-long")] = None,
    resolution: Annotated[str | None, typer.Option("--resolution")] = None,
    max_pixels: Annotated[int | None, typer.Option("--max-pixels")] = None,
    size: Annotated[str | None, typer.Option("--size")] = None,
    file_column: Annotated[str | None, typer.Option("--file-column")] = None,
    caption_column: Annotated[str | None, typer.Option("--caption-column")] = None,
    reuse: Annotated[list[Path] | None, typer.Option("--reuse")] = None,
    device: Annotated[str | None, typer.Option("--device")] = None,
    batch_size: Annotated[int | None, typer.Option("--batch-size")] = None,
    num_workers: Annotated[int | None, typer.Option("--num-workers")] = None,
    shard_size: Annotated[int | None, typer.Option("--shard-size")] = None,
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
    from opensora.data.encode import encode_dataset

    s: Settings = ctx.obj
    cfg = build_config(s, "encode", ctx.params, overwrite=overwrite)
    cfg.validate()
    if cfg.out is None:
        cfg.out = s.home / "datasets" / f"{Path(cfg.captions).resolve().parent.name or 'dataset'}-{cfg.compression}"
        console.print(f"output: {cfg.out} (default under HOME/datasets; pass -o to choose)")
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
