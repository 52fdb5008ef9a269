"""User tools built on the core, one folder each, each plugged into the ``accelserve`` command
by ``add_arguments(parser)`` and ``run(args) -> int``: ``bench`` (load generator), ``export``,
``advisor``, ``examples``."""
