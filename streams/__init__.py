"""StreamSense's Faust application and its edges: settings, wire schemas, adapters, CLI."""

__all__ = ["__version__"]
__version__ = "0.1.0"
