"""Errors an operator can fix. The CLI prints them as one line, never as a traceback."""


class OperatorError(Exception):
    """A mistake in the deployment (config, registration, database, homeserver)."""


class ConfigError(OperatorError):
    """A mistake in the config file or the registration; the message names file and key."""
