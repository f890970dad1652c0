"""DAARION bridge: a Matrix application service that keeps the DAARION messaging index true."""

__version__ = "0.1.0"
