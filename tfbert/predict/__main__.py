"""Batched inference over a file of texts with any backend.

Usage: python -m tfbert.predict --input=FILE --output=FILE.npy|.jsonl [--model=PATH]
       [--task=embed|classify|fill_mask|token_classify|question_answering]
       [--backend=auto|keras-eager|keras-graph|keras-xla|savedmodel|tflite]
       [--batch_size=32] [--max_length=128] [--text_field=text] [--text_column=text]
       [--on_bad_line=skip|error] [--vocab=PATH]
"""

from absl import flags

from tfbert.cli import common
from tfbert.cli import predict as cli

flags.adopt_module_key_flags(cli)
flags.adopt_module_key_flags(common)

if __name__ == "__main__":
    cli.run()
