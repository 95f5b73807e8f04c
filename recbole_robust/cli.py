"""Command line of ``run_recbole_robust.py``: parse, then call ``quick_start`` (which logs the result table).

Bad input (unknown model or dataset, missing or malformed files, invalid values) prints one line
``error: ...`` on stderr and exits with code 2.
"""
import argparse
import sys

from recbole_robust.errors import RecBoleRobustError

EPILOG = """\
Any other RecBole parameter is given as --key=value and overrides config files, e.g.
  --epochs=20 --learning_rate=0.001 --train_batch_size=2048 --seed=2020 --gpu_id=0
  --eval_args="{'split': {'RS': [0.8, 0.1, 0.1]}, 'mode': 'uni100'}" --topk="[5,10,20]"
  --modalities="['image']"   (multimodal models: which item content features to use)
Data: plugin datasets (ml-100k, tiktok, amazon, filmtrust, ciaodvd, ml-1m) are searched for in
--data_path, then $RECBOLE_ROBUST_DATA, then ./dataset, and built once into --build_dir
(default saved/datasets). Other names are read as RecBole atomic files from <data_path>/<dataset>/.
"""


def build_parser():
    parser = argparse.ArgumentParser(
        prog="run_recbole_robust.py",
        description="Train and evaluate a RecBole or recbole-robust model (RecBole-style run).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", "-m", help="model name: a plugin model (e.g. VBPR) or any RecBole model (e.g. BPR)")
    parser.add_argument("--dataset", "-d", help="dataset name, e.g. ml-100k, tiktok, amazon, filmtrust, ciaodvd")
    parser.add_argument("--config_files", help="YAML config files, separated by spaces")
    parser.add_argument("--data_path", help="folder holding dataset folders (default: $RECBOLE_ROBUST_DATA, ./dataset)")
    parser.add_argument("--build_dir", help="where built plugin datasets are cached (default: saved/datasets)")
    parser.add_argument("--resume", metavar="CHECKPOINT",
                        help="continue training from a checkpoint (e.g. saved/<run>.last.pth)")
    parser.add_argument("--saved", default="True", choices=["True", "False"],
                        help="save checkpoints (default: True)")
    return parser


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    args, _ = build_parser().parse_known_args(argv)
    # RecBole reads --key=value overrides from sys.argv itself; options given as "--key value" are
    # passed on explicitly so both spellings work.
    config_dict = {k: getattr(args, k) for k in ("data_path", "build_dir") if getattr(args, k)}
    config_files = args.config_files.strip().split(" ") if args.config_files else None
    try:
        from recbole_robust.quick_start import run_recbole_robust

        result = run_recbole_robust(
            model=args.model, dataset=args.dataset, config_file_list=config_files, config_dict=config_dict,
            saved=args.saved == "True", resume=args.resume,
        )
    except RecBoleRobustError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result["saved_model_file"]:
        print(f"checkpoint: {result['saved_model_file']}")
    return 0
