"""The one exception type for bad user input that stops a job."""

from __future__ import annotations


class InputError(ValueError):
    """Bad input that cannot be skipped row by row; the message is one line naming the file
    (and line, where there is one) and what was received: `file:line: what is wrong`."""
