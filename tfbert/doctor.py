"""Diagnose a BERT checkpoint before loading it: config, vocab, weights, integrity, environment, memory.

Usage: python -m tfbert.doctor [--model=PATH] [--json]
       [--task=embed|classify|fill_mask|token_classify|question_answering]
Exit code: 0 healthy, 1 warnings only, 2 errors.
"""

from absl import flags

from tfbert.cli import common, doctor

flags.adopt_module_key_flags(doctor)
flags.adopt_module_key_flags(common)

if __name__ == "__main__":
    doctor.run()
