"""`python -m rlkit` (and `torchrun -m rlkit ...`) runs the CLI."""

from rlkit.cli.main import main

if __name__ == "__main__":  # not when a child process imports the parent's main module
    main()
