"""Binary next-token tasks on Python code: the pair format, the metrics and the 20 generators."""
from .base import (
    Task,
    TaskBatch,
    TaskExample,
    TaskItem,
    encode_examples,
    evaluate_task,
    flatten,
    load_jsonl_examples,
    task_accuracy,
    task_logit_diff,
    task_loss,
    write_jsonl_examples,
)
from .python_tasks import (
    ANSWER_TOKENS,
    CONTROL_TASKS,
    TASKS,
    get_task,
    nonsense_task,
    task_names,
)

__all__ = [
    "ANSWER_TOKENS",
    "CONTROL_TASKS",
    "TASKS",
    "Task",
    "TaskBatch",
    "TaskExample",
    "TaskItem",
    "encode_examples",
    "evaluate_task",
    "flatten",
    "get_task",
    "load_jsonl_examples",
    "nonsense_task",
    "task_accuracy",
    "task_logit_diff",
    "task_loss",
    "task_names",
    "write_jsonl_examples",
]
