"""The ``llm-sync`` subcommands that talk to endpoints, one module each.

Each module has ``add_parser(subcommands)`` and a ``run_*`` function taking
its parsed arguments and the streams to write to (so tests drive them
in-process); :mod:`.target` is what they share: which endpoints to reach
(the configuration, or the simulator with ``--simulate``).
"""
