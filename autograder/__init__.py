"""The DeepSeek-from-scratch autograder: checks, a worker, a pytest plugin and ``dsgrade``.

See DESIGN.md for the architecture; ``dsgrade --help`` for the command line.
"""

__version__ = "0.1.0"
