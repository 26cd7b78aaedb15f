"""Task families: problem generators, prompt formats, verifiers; built-in tiny models.

Training, measurement and model cards of the built-in models (``ttc.tasks.training``)
import the task families and torch: they sit above the families and are left out of this
package's import on purpose.
"""

from pathlib import Path

from .countdown import COUNTDOWN, CountdownTask
from .sudoku import SUDOKU, SudokuTask

__all__ = ["COUNTDOWN", "CountdownTask", "SUDOKU", "SudokuTask", "CHECKPOINTS_DIR"]

# Shipped checkpoints (package data): one directory per model with a card.json.
CHECKPOINTS_DIR = Path(__file__).parent / "checkpoints"
