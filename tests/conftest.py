import os

import pytest

os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests import tiny


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """tfbert's cache (compiled tokenizer tables) in a fresh directory: the suite starts cold,
    never reads or writes the user's ~/.cache, and its CLI subprocesses inherit the setting."""
    os.environ["TFBERT_CACHE"] = str(tmp_path_factory.mktemp("tfbert-cache"))


@pytest.fixture(scope="session")
def embed_reference():
    return tiny.reference_model("embed", seed=0)


@pytest.fixture(scope="session")
def tiny_safetensors(tmp_path_factory, embed_reference):
    """A tiny PyTorch-layout safetensors checkpoint (BertModel names), shared read-only."""
    return tiny.write_safetensors(str(tmp_path_factory.mktemp("tiny") / "st"), embed_reference, bare=True)


@pytest.fixture
def broken(tmp_path, tiny_safetensors):
    """A private copy of the tiny checkpoint for a test to damage."""
    return tiny.copy_checkpoint(tiny_safetensors, str(tmp_path / "broken"))


@pytest.fixture(scope="session")
def minilm_path():
    from tfbert.checkpoint import default_model_path

    return default_model_path()
