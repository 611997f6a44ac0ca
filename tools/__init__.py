"""Command-line tools of the collection, run from the repository root as ``python -m tools.<name>``."""
