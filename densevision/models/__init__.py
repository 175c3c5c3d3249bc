"""Architectures and task models; importing this package registers them."""

from densevision.models import densenet, dsod, fcdensenet, heads, interop, msdnet, tasks  # noqa: F401
