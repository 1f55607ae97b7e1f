"""TFLite Metadata for a BERT text model: the part of the public schema MediaPipe Tasks read, written and read back.

TFLite Metadata (``metadata_schema.fbs``, identifier ``M001``; the schema MediaPipe Tasks
and the LiteRT Support library parse) lives in the model itself: a flatbuffer in one of the
model's buffers, named ``TFLITE_METADATA`` in ``Model.metadata``, with the files it names
(vocab, labels) appended to the model as a zip archive — the layout MediaPipe's
``MetadataPopulator`` writes and its ``ModelMetadataExtractor`` reads.

MediaPipe's Python metadata writers fail on import in the 1.2.3 wheel (its
``_pywrap_metadata_version`` is not shipped), and mediapipe is not a dependency of tfbert, so
the few tables a BERT model needs are built here with the ``flatbuffers`` package, field by
field from the schema: model name and version, one subgraph whose input process unit is a
``BertTokenizerOptions`` naming the vocab, one ``TensorMetadata`` per input (in the model's
input order) and per output, a ``TENSOR_AXIS_LABELS`` file on a classifier's output. The tests
read what is written with MediaPipe's own generated schema and load it in MediaPipe Tasks.

Importing this module imports neither TensorFlow nor LiteRT.
"""

from __future__ import annotations

import dataclasses
import io
import zipfile

BERT_INPUTS = ("ids", "mask", "segment_ids")  # the input metadata names MediaPipe's BERT preprocessor looks for
METADATA_NAME = "TFLITE_METADATA"
IDENTIFIER = b"M001"
# Input process units and BertTokenizerOptions are 1.1.0 members of the schema (MediaPipe's
# metadata_version.cc); a VOCABULARY / TENSOR_AXIS_LABELS file needs no more than that.
MIN_PARSER_VERSION = "1.1.0"
TENSOR_AXIS_LABELS, VOCABULARY = 2, 5  # AssociatedFileType
_BERT_TOKENIZER = 4  # ProcessUnitOptions: NONE, Normalization, ScoreCalibration, ScoreThresholding, BertTokenizer
_FEATURE_PROPERTIES = 1  # ContentProperties


@dataclasses.dataclass
class AssociatedFile:
    """A file packed in the model and named by the metadata (``type``: :data:`VOCABULARY`, ...)."""

    name: str
    description: str
    type: int


@dataclasses.dataclass
class TensorInfo:
    """One tensor's metadata: ``name`` is what MediaPipe looks tensors up by (``ids``) and calls
    an output head; ``files`` e.g. a classifier's labels."""

    name: str
    description: str = ""
    files: list[AssociatedFile] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class TextModelMetadata:
    """The metadata of a text model with one subgraph.

    Args:
        name, description, version: the model's.
        inputs, outputs: one :class:`TensorInfo` per subgraph input / output, in the model's order.
        vocab: the BertTokenizer's vocab file (its input process unit), or None for none.
        min_parser_version: the oldest metadata parser that reads it.
    """

    name: str
    description: str
    version: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    vocab: AssociatedFile | None = None
    min_parser_version: str = MIN_PARSER_VERSION

    def file_names(self) -> list[str]:
        """Every associated file the metadata names (the zip must hold each)."""
        names = [self.vocab.name] if self.vocab else []
        return names + [f.name for t in self.inputs + self.outputs for f in t.files]


# === Writing ===

def _string(b, text: str | None):
    return None if text is None else b.CreateString(text)


def _vector(b, offsets: list[int]) -> int:
    b.StartVector(4, len(offsets), 4)
    for offset in reversed(offsets):
        b.PrependUOffsetTRelative(offset)
    return b.EndVector()


def _object(b, slots: int, fields: dict[int, int | None], bytes_: dict[int, int] | None = None) -> int:
    """A table: ``fields`` slot -> offset of a child (string, vector, table); ``bytes_`` slot -> int8."""
    b.StartObject(slots)
    for slot, offset in fields.items():
        if offset is not None:
            b.PrependUOffsetTRelativeSlot(slot, offset, 0)
    for slot, value in (bytes_ or {}).items():
        b.PrependUint8Slot(slot, value, 0)
    return b.EndObject()


def _file(b, f: AssociatedFile) -> int:
    # AssociatedFile: name 0, description 1, type 2, locale 3, version 4.
    name, description = _string(b, f.name), _string(b, f.description)
    return _object(b, 5, {0: name, 1: description}, {2: f.type})


def _tensor(b, t: TensorInfo, feature: bool) -> int:
    # TensorMetadata: name 0, description 1, dimension_names 2, content 3, process_units 4,
    # stats 5, associated_files 6. Content: content_properties_type 0, content_properties 1, range 2.
    name, description = _string(b, t.name), _string(b, t.description)
    files = _vector(b, [_file(b, f) for f in t.files]) if t.files else None
    content = None
    if feature:
        properties = _object(b, 0, {})
        content = _object(b, 3, {1: properties}, {0: _FEATURE_PROPERTIES})
    return _object(b, 7, {0: name, 1: description, 3: content, 6: files})


def metadata_buffer(metadata: TextModelMetadata) -> bytes:
    """The ``ModelMetadata`` flatbuffer (identifier ``M001``) for ``metadata``."""
    import flatbuffers

    b = flatbuffers.Builder(1024)
    inputs = _vector(b, [_tensor(b, t, feature=True) for t in metadata.inputs])
    outputs = _vector(b, [_tensor(b, t, feature=True) for t in metadata.outputs])
    units = None
    if metadata.vocab:
        # ProcessUnit: options_type 0, options 1. BertTokenizerOptions: vocab_file 0.
        options = _object(b, 1, {0: _vector(b, [_file(b, metadata.vocab)])})
        units = _vector(b, [_object(b, 2, {1: options}, {0: _BERT_TOKENIZER})])
    # SubGraphMetadata: name 0, description 1, input_tensor_metadata 2, output_tensor_metadata 3,
    # associated_files 4, input_process_units 5, ...
    subgraph = _object(b, 10, {2: inputs, 3: outputs, 5: units})
    # ModelMetadata: name 0, description 1, version 2, subgraph_metadata 3, author 4, license 5,
    # associated_files 6, min_parser_version 7.
    fields = {0: _string(b, metadata.name), 1: _string(b, metadata.description), 2: _string(b, metadata.version),
              3: _vector(b, [subgraph]), 7: _string(b, metadata.min_parser_version)}
    b.Finish(_object(b, 8, fields), file_identifier=IDENTIFIER)
    return bytes(b.Output())


def populate(model: bytes, metadata: TextModelMetadata, files: dict[str, bytes]) -> bytes:
    """``model`` (a .tflite flatbuffer without metadata) with ``metadata`` in it and ``files`` appended as a zip.

    Args:
        model: the converted model's bytes.
        metadata: what to write; its tensors must match the model's inputs and outputs.
        files: name -> content of every file the metadata names (and only those).

    Raises:
        ValueError: the metadata and the model or the files disagree (a bug in the caller).

    Example:
        >>> with_metadata = populate(model, TextModelMetadata("m", "", "1", inputs, outputs, vocab),
        ...                          {"vocab.txt": vocab_bytes})  # doctest: +SKIP
    """
    import flatbuffers
    import numpy as np
    from ai_edge_litert import schema_py_generated as schema

    if sorted(files) != sorted(metadata.file_names()):
        raise ValueError(f"files {sorted(files)} differ from those the metadata names {metadata.file_names()}")
    tree = schema.ModelT.InitFromObj(schema.Model.GetRootAs(model, 0))
    graph = tree.subgraphs[0]
    if len(tree.subgraphs) != 1 or (len(graph.inputs), len(graph.outputs)) != (len(metadata.inputs),
                                                                                len(metadata.outputs)):
        raise ValueError("the metadata's tensors differ from the model's")
    buffer = schema.BufferT()
    buffer.data = np.frombuffer(metadata_buffer(metadata), np.uint8)  # an array packs as one copy
    tree.buffers.append(buffer)
    entry = schema.MetadataT()
    entry.name, entry.buffer = METADATA_NAME, len(tree.buffers) - 1
    tree.metadata = [m for m in (tree.metadata or []) if m.name != METADATA_NAME.encode()] + [entry]
    b = flatbuffers.Builder(len(model) + 4096)
    b.Finish(tree.Pack(b), file_identifier=b"TFL3")
    out = io.BytesIO(bytes(b.Output()))
    out.seek(0, io.SEEK_END)
    # "a" on a file that is not a zip appends an archive after it: MediaPipe's populator does the same.
    with zipfile.ZipFile(out, "a") as archive:
        for name, content in files.items():
            archive.writestr(name, content)
    return out.getvalue()


# === Reading ===

def _offset(tab, slot: int) -> int:
    return tab.Offset(4 + 2 * slot)


def _read_string(tab, slot: int) -> str | None:
    o = _offset(tab, slot)
    return tab.String(o + tab.Pos).decode("utf-8") if o else None


def _read_table(tab, slot: int):
    from flatbuffers.table import Table

    o = _offset(tab, slot)
    return Table(tab.Bytes, tab.Indirect(o + tab.Pos)) if o else None


def _read_tables(tab, slot: int) -> list:
    from flatbuffers.table import Table

    o = _offset(tab, slot)
    if not o:
        return []
    start = tab.Vector(o)
    return [Table(tab.Bytes, tab.Indirect(start + 4 * i)) for i in range(tab.VectorLen(o))]


def _read_byte(tab, slot: int) -> int:
    from flatbuffers import number_types

    o = _offset(tab, slot)
    return tab.Get(number_types.Uint8Flags, o + tab.Pos) if o else 0


def _read_file(tab) -> AssociatedFile:
    return AssociatedFile(_read_string(tab, 0) or "", _read_string(tab, 1) or "", _read_byte(tab, 2))


def _read_tensor(tab) -> TensorInfo:
    return TensorInfo(_read_string(tab, 0) or "", _read_string(tab, 1) or "",
                      [_read_file(f) for f in _read_tables(tab, 6)])


def metadata_bytes(model: bytes) -> bytes | None:
    """The ``TFLITE_METADATA`` buffer of a .tflite flatbuffer, or None when it has none.

    Raises:
        ValueError: ``model`` is not a TFLite flatbuffer.
    """
    from ai_edge_litert import schema_py_generated as schema

    if len(model) < 8 or model[4:8] != b"TFL3":
        raise ValueError("not a TFLite flatbuffer (no TFL3 identifier)")
    root = schema.Model.GetRootAs(model, 0)
    for i in range(root.MetadataLength()):
        entry = root.Metadata(i)
        if entry.Name() == METADATA_NAME.encode():
            return root.Buffers(entry.Buffer()).DataAsNumpy().tobytes()
    return None


def subgraph_count(model: bytes) -> int:
    """How many subgraphs a .tflite flatbuffer has (MediaPipe's text tasks take one)."""
    from ai_edge_litert import schema_py_generated as schema

    return schema.Model.GetRootAs(model, 0).SubgraphsLength()


def read(model: bytes) -> TextModelMetadata | None:
    """The metadata :func:`populate` writes, read back from a model's bytes (None when it has none).

    Only the first subgraph and the first input process unit (MediaPipe's tokenizer) are read.

    Raises:
        ValueError: not a TFLite flatbuffer, or its metadata buffer is not TFLite Metadata.
    """
    from flatbuffers.table import Table
    from flatbuffers.util import BufferHasIdentifier, GetBufferIdentifier

    data = metadata_bytes(model)
    if data is None:
        return None
    if not BufferHasIdentifier(data, 0, IDENTIFIER):
        raise ValueError(f"metadata identifier {bytes(GetBufferIdentifier(data, 0))!r} is not {IDENTIFIER!r}")
    import flatbuffers.encode
    from flatbuffers import packer

    root = Table(data, flatbuffers.encode.Get(packer.uoffset, data, 0))
    subgraphs = _read_tables(root, 3)
    subgraph = subgraphs[0] if subgraphs else None
    vocab = None
    units = _read_tables(subgraph, 5) if subgraph else []
    if units and _read_byte(units[0], 0) == _BERT_TOKENIZER:
        files = _read_tables(_read_table(units[0], 1), 0)
        vocab = _read_file(files[0]) if files else None
    return TextModelMetadata(
        name=_read_string(root, 0) or "", description=_read_string(root, 1) or "",
        version=_read_string(root, 2) or "",
        inputs=[_read_tensor(t) for t in _read_tables(subgraph, 2)] if subgraph else [],
        outputs=[_read_tensor(t) for t in _read_tables(subgraph, 3)] if subgraph else [],
        vocab=vocab, min_parser_version=_read_string(root, 7) or "")


def packed_files(model: bytes) -> dict[str, bytes]:
    """The files appended to a model as a zip (empty when there are none)."""
    try:
        with zipfile.ZipFile(io.BytesIO(model)) as archive:
            return {name: archive.read(name) for name in archive.namelist()}
    except zipfile.BadZipFile:
        return {}
