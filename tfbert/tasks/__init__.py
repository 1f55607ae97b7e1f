"""Task logic beyond the encoder's outputs: what turns a model's outputs into answers — token
classification's entities (:mod:`~tfbert.tasks.token_classification`) and extractive question
answering's windows and span search (:mod:`~tfbert.tasks.question_answering`).

Importing this package does not import TensorFlow.

Example:
    >>> from tfbert.tasks import STRATEGIES, question_answering
    >>> STRATEGIES
    ('simple', 'first', 'max')
    >>> question_answering.window_starts(10, 4, 1)
    [0, 3, 6]
"""

from tfbert.tasks import question_answering
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
           "aggregate_batch", "entities_from_outputs", "entity_graph", "question_answering"]
