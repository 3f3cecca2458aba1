"""The ``wsgimirror`` command: :mod:`.cli` parses the arguments and runs one subcommand; :mod:`.serve`,
:mod:`.sink` and :mod:`.demo` are the servers it starts. The commands import the library, never the reverse."""

from __future__ import annotations


class CommandError(Exception):
    """A problem with the command's arguments, reported in one line with exit status 2."""
