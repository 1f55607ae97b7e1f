"""Task heads beyond embeddings and sentence classification: what turns a model's outputs into answers.

Importing this package does not import TensorFlow.

Example:
    >>> from tfbert.tasks import STRATEGIES
    >>> STRATEGIES
    ('simple', 'first', 'max')
"""

from tfbert.tasks.token_classification import (
    DEFAULT_AGGREGATION,
    ENTITY_OUTPUTS,
    STRATEGIES,
    Entity,
    TagTables,
    aggregate,
    aggregate_batch,
    entities_from_outputs,
    entity_graph,
)

__all__ = ["DEFAULT_AGGREGATION", "ENTITY_OUTPUTS", "STRATEGIES", "Entity", "TagTables", "aggregate",
           "aggregate_batch", "entities_from_outputs", "entity_graph"]
