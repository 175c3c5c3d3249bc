"""Python config files: plain ``key = value`` modules composed with ``_base_`` and tuned with dotted overrides.

A config is executed as Python, so it can compute values, but what it yields is data: nested dicts, lists and
scalars that ``Registry.build`` turns into objects. Every nested dict is a ``ConfigDict`` that remembers which file it
was loaded from, so a bad value found deep inside a build names the config file to fix. Every tool loads its config
with ``load_config``: overrides checked, set on the files' variables as they run (so values built from a variable
carry its override), and logged.
"""

from densevision.config.dicts import ConfigDict
from densevision.config.files import Config
from densevision.config.overrides import load_config, parse_cfg_options
from densevision.registry import ConfigError

__all__ = ["Config", "ConfigDict", "ConfigError", "load_config", "parse_cfg_options"]
