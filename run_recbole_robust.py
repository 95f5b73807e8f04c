"""Train and evaluate a model: ``python run_recbole_robust.py --model=VBPR --dataset=ml-100k``.

``--help`` lists the options; any RecBole parameter is accepted as ``--key=value``.
"""
import sys

from recbole_robust.cli import main

if __name__ == "__main__":
    sys.exit(main())
