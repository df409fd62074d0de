"""``python -m autograder`` is ``dsgrade``."""

from .cli import run

run()
