"""`rlkit plot OUTPUT_DIR... [--out FILE.png] [--x step|time]`: the training curves of metrics.jsonl as a PNG, one run
or several overlaid."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("plot")
@click.argument("output_dirs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path), default=None,
              help="PNG path (default: OUTPUT_DIR/curves.png; needed with several runs).")
@click.option("--keys", default=None, help="Comma-separated metric names (default: the main ones present).")
@click.option("--x", "x_axis", type=click.Choice(["step", "time"]), default="step", show_default=True,
              help="The x axis: training step, or seconds of training (the sum of time/step).")
def plot_command(output_dirs: tuple[Path, ...], out: Path | None, keys: str | None, x_axis: str) -> None:
    """Plot reward, validation, losses, KL, entropy and lengths over steps (or training seconds); several
    OUTPUT_DIRs overlay their curves in one figure (one line a run, labelled by its folder's name)."""
    from rlkit.errors import ConfigError
    from rlkit.plotting import plot_metrics

    if out is None and len(output_dirs) > 1:
        raise ConfigError(f"{len(output_dirs)} runs go into one figure: name it with --out FILE.png")
    written = plot_metrics([directory / "metrics.jsonl" for directory in output_dirs],
                           out or output_dirs[0] / "curves.png", keys.split(",") if keys else None,
                           labels=[directory.name for directory in output_dirs], x=x_axis)
    click.echo(f"wrote {written}")
