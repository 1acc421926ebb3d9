"""``python -m suricate``: the ``suricate`` command."""

from .cli import main

main(prog_name="suricate")
