"""`opensora data`: download, collate and encode datasets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from opensora.data.collate import collate_msrvtt
from opensora.data.download import MSRVTT_URL, download_dataset, remove_partial
from opensora_cli.render import console, progress_bars, table
from opensora_cli.settings import Settings

app = typer.Typer(help="Download, collate and encode video datasets.", no_args_is_help=True)


@app.command()
def download(
    ctx: typer.Context,
    dest: Annotated[Path | None, typer.Option("--dest", "-d", help="Directory to download and extract into.")] = None,
    url: Annotated[str | None, typer.Option("--url", help="Archive URL (zip or tar).")] = None,
    sha256: Annotated[str | None, typer.Option("--sha256", help="Expected SHA-256 of the archive.")] = None,
    size: Annotated[int | None, typer.Option("--size", help="Expected archive size in bytes.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Download again even if complete.")] = False,
) -> None:
    """Download MSR-VTT (resumable, checksummed) and extract it safely.

    Rerun the same command after an interruption to resume. Without --dest the data goes to
    HOME/downloads/msrvtt (see `opensora config show`).

    [bold]Example[/bold]: opensora data download --dest ~/data/msrvtt
    """
    s: Settings = ctx.obj
    dest = dest or s.home / "downloads" / "msrvtt"
    url = s.get("download.url", url) or MSRVTT_URL
    if force:
        remove_partial(dest)
    with progress_bars() as progress:
        r = download_dataset(dest, url=url, sha256=sha256, size=size, progress=progress)
    if r.skipped:
        console.print(f"already complete: {r.dest} ({r.bytes:,} bytes, sha256 {r.sha256[:16]}…)")
    else:
        resumed = f", resumed at {r.resumed_from:,} bytes" if r.resumed_from else ""
        console.print(f"downloaded {r.archive} ({r.bytes:,} bytes{resumed}), sha256 {r.sha256}")
        console.print(f"extracted into {r.dest}")
    console.print(f"next: opensora data collate -d {r.dest}")


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
            console.print(f"[yellow]{len(items)} {label}:[/yellow] {shown}")
    first = sorted(r.videos)[0] if r.videos else "train"
    console.print(f"next: opensora data encode -c {r.out / first / 'annotations.json'} -v {r.out / first / 'videos'}")
