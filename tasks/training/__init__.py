"""Training, rejection sampling, measurement and model cards of the built-in tiny models.

This package sits on top of the task families (it imports ``ttc.tasks.countdown`` and
``ttc.tasks.sudoku``; no task family imports it) and pulls in torch, which is why
``ttc.tasks`` leaves it out of its own import.

- :mod:`.recipes`: :class:`TrainConfig`, the built-in ``RECIPES``, :func:`with_budget`.
- :mod:`.loop`: :func:`train` (``python -m ttc.tasks.training NAME OUT_DIR [minutes]``).
- :mod:`.rejection`: :func:`sample_verified`, rejection-sampling fine-tuning data.
- :mod:`.measure`, :mod:`.countdown_eval`, :mod:`.sudoku_eval`, :mod:`.evaluate`: the
  numbers of a model card; :func:`evaluate_checkpoint` reproduces them.
- :mod:`.cards`: :func:`write_card`, :func:`ship_checkpoint`, :func:`qwen2_to_llama`.
"""

from .cards import qwen2_to_llama, ship_checkpoint, write_card
from .evaluate import evaluate_checkpoint
from .loop import build_model, example_stream, train
from .measure import checkpoint_kind, checkpoint_task, load_backend
from .recipes import RECIPES, TrainConfig, with_budget
from .rejection import sample_verified

__all__ = [
    "RECIPES",
    "TrainConfig",
    "build_model",
    "checkpoint_kind",
    "checkpoint_task",
    "evaluate_checkpoint",
    "example_stream",
    "load_backend",
    "qwen2_to_llama",
    "sample_verified",
    "ship_checkpoint",
    "train",
    "with_budget",
    "write_card",
]
