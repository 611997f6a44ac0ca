"""``python -m tools.benchmark``: see ``tools.benchmark``."""

from tools.benchmark import main

if __name__ == "__main__":
    main()
