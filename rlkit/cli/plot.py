"""`rlkit plot OUTPUT_DIR`: render the training curves of metrics.jsonl to PNG."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("plot")
@click.argument("output_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None, help="PNG path (default: OUTPUT_DIR/curves.png).")
@click.option("--keys", default=None, help="Comma-separated metric names (default: the main ones present).")
def plot_command(output_dir: Path, out: Path | None, keys: str | None) -> None:
    """Plot reward, validation, losses, KL, entropy and lengths over steps."""
    from rlkit.plotting import plot_metrics

    written = plot_metrics(output_dir / "metrics.jsonl", out or output_dir / "curves.png",
                           keys.split(",") if keys else None)
    click.echo(f"wrote {written}")
