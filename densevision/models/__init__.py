"""Architectures and task models; importing this package registers them."""

import densevision.early_exit.task  # noqa: F401  (registers EarlyExitClassifier in TASKS)
from densevision.models import densenet, dsod, fcdensenet, heads, interop, msdnet, tasks  # noqa: F401
