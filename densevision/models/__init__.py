"""Architectures and task models; importing this package registers them."""

from densevision.models import densenet, fcdensenet, interop, tasks  # noqa: F401
