"""The one exception type the command line turns into a one-line message instead of a traceback."""

from __future__ import annotations


class UserInputError(ValueError):
    """Bad input from the user (a flag, a config file, a data file, a model path, an output folder)."""
