"""`python -m rlkit` (and `torchrun -m rlkit ...`) runs the CLI."""

from rlkit.cli.main import main

main()
