"""Lightning callbacks for multi-task training."""

from mtl.callbacks.expert_diagnostics import ExpertDiagnostics
from mtl.callbacks.prediction_writer import PredictionWriter, load_predictions
from mtl.callbacks.task_sampling_monitor import TaskSamplingMonitor

__all__ = ["ExpertDiagnostics", "PredictionWriter", "TaskSamplingMonitor", "load_predictions"]
