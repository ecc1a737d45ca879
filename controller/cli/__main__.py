"""`python -m controller.cli`: the `envship` command."""

from controller.cli.main import main

main()
