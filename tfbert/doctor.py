"""``python -m tfbert.doctor`` — see :mod:`tfbert.cli.doctor`."""

from tfbert.cli.doctor import run

if __name__ == "__main__":
    run()
