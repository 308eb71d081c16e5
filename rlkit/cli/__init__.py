"""The rlkit command line."""
