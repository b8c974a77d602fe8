"""Task kinds: one subpackage per kind registers it (``TASK_KINDS`` imports them on first use)."""

from tasks.kinds.base import (
    TASK_KINDS,
    InferenceRef,
    Scores,
    TaskKindContract,
    TaskKindSpec,
    kind_code_version,
    register_task_kind,
)


def get_task_kind(name: str) -> TaskKindContract:
    return TASK_KINDS.get(name)


__all__ = ["TASK_KINDS", "InferenceRef", "Scores", "TaskKindContract", "TaskKindSpec",
           "get_task_kind", "kind_code_version", "register_task_kind"]
