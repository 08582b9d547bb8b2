"""newsletter: issues as YAML files, rendered once, sent safely to every subscriber exactly once."""

__version__ = "0.1.0"
