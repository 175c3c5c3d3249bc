"""Architectures and task models; importing this package registers them."""

from densevision.models import densenet, dsod, fcdensenet, heads, interop  # noqa: F401

# The task wrappers last (they build these architectures): importing the models makes a config's `model` buildable.
import densevision.tasks  # noqa: E402, F401, I001
