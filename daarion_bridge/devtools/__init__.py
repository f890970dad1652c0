"""Developer tools: a local Synapse harness and the one-command dev setup.

These need the ``dev`` extra (``matrix-synapse``); nothing in the bridge imports them.
"""
