"""TF Serving's configuration files for tfbert's SavedModels: batching parameters and a models.config."""

from __future__ import annotations


def batching_parameters(max_batch_size: int = 32, batch_timeout_micros: int = 2000, num_batch_threads: int = 2,
                        max_enqueued_batches: int = 100) -> str:
    """A ``--batching_parameters_file`` for tfbert's SavedModels (BatchingParameters text proto).

    ``pad_variable_length_inputs`` stays false: ``serving_default``'s text input has no
    dimension to pad, and TF Serving pads with a tensor's first element — ``[CLS]`` and
    attention mask 1 for ``tokenized`` — which would make padding count as text. Clients of
    ``tokenized`` pad to one length themselves (mask 0), as Hugging Face's tokenizer does.
    """
    sizes = [1]
    while sizes[-1] * 2 <= max_batch_size:
        sizes.append(sizes[-1] * 2)
    if sizes[-1] != max_batch_size:
        sizes.append(max_batch_size)
    return (f"max_batch_size {{ value: {max_batch_size} }}\n"
            f"batch_timeout_micros {{ value: {batch_timeout_micros} }}\n"
            f"max_enqueued_batches {{ value: {max_enqueued_batches} }}\n"
            f"num_batch_threads {{ value: {num_batch_threads} }}\n"
            + "".join(f"allowed_batch_sizes: {s}\n" for s in sizes)
            + "pad_variable_length_inputs: false\n")


def models_config(name: str, base_path: str, versions: list[int], labels: dict[str, int] | None = None) -> str:
    """A ``--model_config_file`` serving several versions of one model (ModelServerConfig text proto).

    Example:
        >>> print(models_config("minilm", "/models/minilm", [1, 2], {"stable": 1, "canary": 2}))
    """
    specific = " ".join(f"versions: {v}" for v in versions)
    label_lines = "".join(f"    version_labels {{ key: {k!r} value: {v} }}\n".replace("'", '"')
                          for k, v in (labels or {}).items())
    return ("model_config_list {\n  config {\n"
            f"    name: \"{name}\"\n    base_path: \"{base_path}\"\n    model_platform: \"tensorflow\"\n"
            f"    model_version_policy {{ specific {{ {specific} }} }}\n"
            f"{label_lines}  }}\n}}\n")
