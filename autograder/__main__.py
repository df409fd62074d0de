"""``python -m autograder`` is ``dsgrade``."""

import sys

from .cli import main

sys.exit(main())
