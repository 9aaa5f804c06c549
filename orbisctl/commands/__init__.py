"""One typer sub-app per verb group; each is a thin layer over plain core functions."""
