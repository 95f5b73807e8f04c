"""Train and evaluate a model: ``python run_recbole_robust.py --model=VBPR --dataset=ml-100k``.

The same command as ``recbole-robust`` (``recbole_robust_cli.py``): ``--help`` lists the options and the
subcommands (train, report, tune, table); any RecBole parameter is accepted as ``--key=value``.
"""
import sys

from recbole_robust_cli import main

if __name__ == "__main__":
    sys.exit(main())
