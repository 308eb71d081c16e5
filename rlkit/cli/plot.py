"""`rlkit plot OUTPUT_DIR [OUTPUT_DIR ...]`: render the training curves of metrics.jsonl to PNG, several runs over
each other."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("plot")
@click.argument("output_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG path (default: OUTPUT_DIR/curves.png; with several runs, curves.png here).")
@click.option("--keys", default=None, help="Comma-separated metric names (default: the main ones present).")
@click.option("--x", "x_axis", type=click.Choice(["step", "time"]), default="step", show_default=True,
              help="The x axis: training step, or seconds of training (the sum of time/step).")
def plot_command(output_dirs: tuple[Path, ...], out: Path | None, keys: str | None, x_axis: str) -> None:
    """Plot reward, validation, losses, KL, entropy and lengths over steps; several runs side by side."""
    from rlkit.plotting import plot_metrics

    default = output_dirs[0] / "curves.png" if len(output_dirs) == 1 else Path("curves.png")
    written = plot_metrics([directory / "metrics.jsonl" for directory in output_dirs], out or default,
                           keys.split(",") if keys else None, x=x_axis)
    click.echo(f"wrote {written}")
