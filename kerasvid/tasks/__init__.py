"""Tasks: one per kind of training (classification here; triplet and factorization register from their modules).

`_TASK_MODULES` lists the modules imported on first use of the registry so that their tasks register.
"""
import importlib

from kerasvid.tasks.base import Task, TaskConfig, get_task as _get_task, list_tasks as _list_tasks, register_task

_TASK_MODULES = ("kerasvid.tasks.classification", "kerasvid.tasks.triplet", "kerasvid.tasks.factorization")


def _import_task_modules():
    for module in _TASK_MODULES:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as e:  # a task module that is not written yet
            if e.name != module:
                raise


def list_tasks():
    """Sorted names of the registered tasks."""
    _import_task_modules()
    return _list_tasks()


def get_task(name, config):
    """Builds the task `name` for a `TaskConfig`."""
    _import_task_modules()
    return _get_task(name, config)


__all__ = ["Task", "TaskConfig", "get_task", "list_tasks", "register_task"]
