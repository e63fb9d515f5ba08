"""Task sets (built-in and user files) and their tokenization."""

from layertracer.tasks.encoding import EncodedItem, encode_item, encode_task
from layertracer.tasks.sets import (
    BUILTIN_TASKS,
    Task,
    TaskItem,
    builtin_facts,
    builtin_task,
    load_task_file,
    load_tasks,
)

__all__ = [
    "BUILTIN_TASKS",
    "EncodedItem",
    "Task",
    "TaskItem",
    "builtin_facts",
    "builtin_task",
    "encode_item",
    "encode_task",
    "load_task_file",
    "load_tasks",
]
