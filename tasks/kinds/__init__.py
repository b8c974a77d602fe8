"""Task kinds. Every module in this package registers its kind on import."""

from tasks.kinds.base import TASK_KINDS, Scores, TaskKindSpec, register_task_kind
from tasks.registry_loader import import_submodules


def get_task_kind(name: str) -> TaskKindSpec:
    import_submodules("tasks.kinds")
    return TASK_KINDS.get(name)


__all__ = ["TASK_KINDS", "Scores", "TaskKindSpec", "get_task_kind", "register_task_kind"]
