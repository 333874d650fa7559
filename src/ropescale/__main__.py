"""``python -m ropescale``: the ``ropescale`` command (see :mod:`ropescale.cli`)."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main(prog="python -m ropescale"))
