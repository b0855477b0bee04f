"""The model's history: was it already quantized before this examination, on what grid, in which layers?"""

from doctor.history.grid import GridFit, fit_grid
from doctor.history.scan import History, detect_history, linear_weights

__all__ = ["GridFit", "History", "detect_history", "fit_grid", "linear_weights"]
