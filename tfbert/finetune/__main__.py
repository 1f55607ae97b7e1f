"""Fine-tune a BERT checkpoint as a text classifier; the result is a tfbert checkpoint directory.

Usage: python -m tfbert.finetune --train=FILE --eval=FILE --output_dir=DIR [--model=PATH]
       [--text_column=text] [--label_column=label] [--freeze=embeddings,encoder:0-3 | --freeze=all_but_head]
       [--pooling=mean|cls|max|pooler] [--epochs=3] [--batch_size=16] [--max_length=128]
       [--learning_rate=3e-3 head alone | 5e-5 otherwise] [--weight_decay=0.01] [--warmup_ratio=0.1]
       [--mixed_precision] [--early_stopping_patience=2] [--class_weights] [--allow_no_learning] [--overwrite]

Exit codes: 0 done; 2 refused or failed (nothing written); 3 saved, but the model learned nothing.
"""

from absl import flags

from tfbert.cli import common
from tfbert.cli import finetune as cli

flags.adopt_module_key_flags(cli)
flags.adopt_module_key_flags(common)

if __name__ == "__main__":
    cli.run()
