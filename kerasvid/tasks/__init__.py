"""Tasks: one per kind of training (classification, actor_observer, action_context, ...), each registered by its module.

Every module of this package is imported on first use of the registry (`list_tasks`, `get_task`), so a new task
file needs no line here.
"""
from kerasvid import _submodules
from kerasvid.tasks.base import Task, TaskConfig, get_task as _get_task, list_tasks as _list_tasks, register_task


def _import_task_modules():
    _submodules.import_modules(__name__)


def list_tasks():
    """Sorted names of the registered tasks."""
    _import_task_modules()
    return _list_tasks()


def get_task(name, config):
    """Builds the task `name` for a `TaskConfig`."""
    _import_task_modules()
    return _get_task(name, config)


__all__ = ["Task", "TaskConfig", "get_task", "list_tasks", "register_task"]
