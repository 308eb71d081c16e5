"""`rlkit list`: every registered component, where it came from, and whether its dependencies are installed."""

from __future__ import annotations

import click


@click.command("list")
def list_command() -> None:
    """List training engines, rollout engines, estimators, policy losses, rewards, environments and tools."""
    from rlkit.registry import ALL_REGISTRIES

    for group, registry in ALL_REGISTRIES.items():
        click.echo(f"{group} ({registry.kind}s; entry point group {registry.entry_point_group}):")
        for entry in registry.entries():
            missing = entry.missing
            status = "ok" if not missing else f"missing: {', '.join(missing)} (pip install 'rlkit[{entry.name}]')"
            click.echo(f"  {entry.name:<30} {entry.source:<28} {status:<10} {entry.target}")
        click.echo("")
