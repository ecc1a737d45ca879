"""The pure core: spec bytes -> model -> canonical hash -> rendered build -> plan.

Nothing in this package performs I/O; it reads files only through the `SourceTree`
protocol handed to it, so the same code serves a checkout, a git tree or a test fixture.
"""
