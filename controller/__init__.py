"""envship: keep a container registry in step with a git repository of Azure ML environments."""

__version__ = "0.1.0"
