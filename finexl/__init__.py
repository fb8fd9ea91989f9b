"""finexl: say in words how a personalized text-to-image model differs from its base, and by how much."""

__version__ = "0.1.0"
