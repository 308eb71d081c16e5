"""Placement: which ranks of a job train and which roll out, the process groups between them, and the transport
of weights and experience across a split job. See docs/placement.md.

- `rlkit.placement.layout`: the pure arithmetic (roles, tensor-parallel groups, prompt shards).
- `rlkit.placement.channel`: messages and bucketed weight broadcasts between the two sides of a split job.
- `rlkit.placement.setup`: `init_placement`, which joins this process to its side's world and to the bridge.
"""

from rlkit.placement.channel import Channel, PlacementError, WeightBroadcast
from rlkit.placement.layout import Layout, layout_for
from rlkit.placement.setup import Placement, colocated_placement, init_placement

__all__ = ["Channel", "Layout", "Placement", "PlacementError", "WeightBroadcast", "colocated_placement",
           "init_placement", "layout_for"]
