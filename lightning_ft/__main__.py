"""`python -m lightning_ft`: the `lightning-ft` command."""

from lightning_ft.launcher import main

main()
