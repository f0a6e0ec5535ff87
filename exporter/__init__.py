"""inngest-cancellation-exporter: why was this Inngest run cancelled, and how old was it?"""

from importlib.metadata import version

DISTRIBUTION = "inngest-cancellation-exporter"
__version__ = version(DISTRIBUTION)
"""The installed package's version (pyproject.toml's, the one source): `--version`, build_info and the spans' scope tell it."""
