"""The task registry: `model.task` names -> Task classes.

A new task is a `Task` subclass in its own module, listed in `TASKS`; configs name it in
`model.task`, exports record it in their metadata, and every caller finds it here.
"""

from axial_tf.experiment.tasks.base import Task
from axial_tf.experiment.tasks.classification import ClassificationTask
from axial_tf.experiment.tasks.panoptic import PanopticTask
from axial_tf.experiment.tasks.semantic import SemanticTask

TASKS = {task.name: task for task in (PanopticTask, ClassificationTask, SemanticTask)}


def task_class(name):
    """The Task class registered as `name` (a config's `model.task`, an export's "task").

    Raises:
        ValueError: No task has that name (the message lists the known ones).
    """
    if name not in TASKS:
        raise ValueError(f"Unknown task {name!r}; known tasks: {', '.join(TASKS)}.")
    return TASKS[name]


def task_for_config(config):
    """The Task object of an experiment config."""
    return task_class(config.model.task)(config)


def task_of_model(model):
    """The name of the task whose model class `model` is (e.g. a model loaded from `.keras`).

    Raises:
        ValueError: `model` is no task's model.
    """
    for task in TASKS.values():
        if isinstance(model, task.model_class):
            return task.name
    raise ValueError(f"{type(model).__name__} is not the model of any task ({', '.join(TASKS)}).")


def build_model(config, sync_batch_norm=None):
    """The model an experiment config describes (see `Task.build_model`)."""
    return task_for_config(config).build_model(sync_batch_norm=sync_batch_norm)


__all__ = ["TASKS", "ClassificationTask", "PanopticTask", "SemanticTask", "Task", "build_model", "task_class",
           "task_for_config", "task_of_model"]
