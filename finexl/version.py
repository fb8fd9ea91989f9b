"""The version of finexl (one place: the package and every file it writes read it here)."""

__version__ = "0.1.0"
