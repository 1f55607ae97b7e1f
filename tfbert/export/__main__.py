"""Export a BERT checkpoint: a verified TF Serving SavedModel and (with --quantize) a TFLite model.

Usage: python -m tfbert.export [--model=PATH] [--output_dir=exported] [--name=NAME] [--version=N]
       [--task=embed|classify|fill_mask|token_classify|question_answering]
       [--quantize] [--quantization=int8|dynamic|fp16|none]
       [--calibration_data=FILE] [--max_seq_length=128] [--tflite_text_input] [--notflite_speed]
       [--overwrite]
"""

from absl import flags

from tfbert.cli import common
from tfbert.cli import export as cli

flags.adopt_module_key_flags(cli)
flags.adopt_module_key_flags(common)

if __name__ == "__main__":
    cli.run()
