"""Stage 1 — checkpoint: find a checkpoint's files and read its tensors (no TensorFlow needed
except for TF1 checkpoints)."""

from tfbert.checkpoint.files import CheckpointFiles, default_model_path, find_checkpoint
from tfbert.checkpoint.pooling import POOLINGS, checkpoint_pooling, pooling_origin, sentence_transformers_pooling
from tfbert.checkpoint.sources import WeightSource, open_weights

__all__ = ["POOLINGS", "CheckpointFiles", "WeightSource", "checkpoint_pooling", "default_model_path",
           "find_checkpoint", "open_weights", "pooling_origin", "sentence_transformers_pooling"]
