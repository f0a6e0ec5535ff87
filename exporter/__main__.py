"""`python -m exporter` is the same program as the console script."""

from exporter.cli import main

if __name__ == "__main__":
    main()
