"""Stage 1 — checkpoint: find a checkpoint's files and read its tensors (no TensorFlow needed
except for TF1 checkpoints)."""

from tfbert.checkpoint.files import CheckpointFiles, default_model_path, find_checkpoint
from tfbert.checkpoint.sources import WeightSource, open_weights

__all__ = ["CheckpointFiles", "WeightSource", "default_model_path", "find_checkpoint", "open_weights"]
