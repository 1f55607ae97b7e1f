"""The command-line layer: the only place that knows about flags (absl).

Each ``python -m tfbert.<command>`` module is a two-line shim onto ``tfbert.cli.<command>``.
"""
