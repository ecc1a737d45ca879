"""Adapters: the only place that touches the filesystem, git, the network or the Docker engine."""
