"""Configuration: defaults, validation and environment overrides.

The modules, lower first: `defaults` (every default, and the required keys), `model`
(the parsed config's frozen dataclasses), `yaml_io` (reading and atomically writing
YAML), `reader` (typed access to one section), `parse` (environment overrides and the
validating parse), `tokens` (`-g`), `roster` (microDAOs, blueprints and agents). The
names below are the package's interface; import them from `daarion_bridge.config`.
"""

from __future__ import annotations

from .defaults import DEFAULTS, EXAMPLE_CONFIG, GENERATE, REQUIRED, example_config_text
from .model import (
    ADMIN_LEVEL,
    PERMISSION_LEVELS,
    USER_LEVEL,
    ApiConfig,
    AppserviceConfig,
    BackfillConfig,
    BridgeConfig,
    Config,
    DatabaseConfig,
    EncryptionConfig,
    HomeserverConfig,
    MetricsConfig,
    NatsConfig,
)
from .parse import ENV_PREFIX, env_name, load_config, parse_config
from .tokens import TOKEN_KEYS, generate_tokens, token_value
from .yaml_io import read_yaml, round_trip_yaml, write_yaml_atomic

__all__ = [
    "ADMIN_LEVEL",
    "DEFAULTS",
    "ENV_PREFIX",
    "EXAMPLE_CONFIG",
    "GENERATE",
    "PERMISSION_LEVELS",
    "REQUIRED",
    "TOKEN_KEYS",
    "USER_LEVEL",
    "ApiConfig",
    "AppserviceConfig",
    "BackfillConfig",
    "BridgeConfig",
    "Config",
    "DatabaseConfig",
    "EncryptionConfig",
    "HomeserverConfig",
    "MetricsConfig",
    "NatsConfig",
    "env_name",
    "example_config_text",
    "generate_tokens",
    "load_config",
    "parse_config",
    "read_yaml",
    "round_trip_yaml",
    "token_value",
    "write_yaml_atomic",
]
