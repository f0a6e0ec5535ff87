"""inngest-cancellation-exporter: why was this Inngest run cancelled, and how old was it?"""

__version__ = "0.1.0"
