"""Architectures and task models; importing this package registers them (the task wrappers live in densevision.tasks
and build these architectures, so importing the models makes a config's `model` buildable)."""

import densevision.early_exit.task  # noqa: F401  (registers EarlyExitClassifier in TASKS)
import densevision.tasks  # noqa: F401
from densevision.models import densenet, dsod, fcdensenet, heads, interop, msdnet  # noqa: F401
