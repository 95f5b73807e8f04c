"""Command line of ``run_recbole_robust.py``: parse, then call ``quick_start`` (which logs the result table).

Bad input (unknown model or dataset, missing or malformed files, invalid values) prints one line
``error: ...`` on stderr and exits with code 2; a training loss that turns NaN, or a full disk, stops
the run with one ``error:`` line (naming the checkpoint kept) and exit code 1; Ctrl-C with one line
naming the last complete checkpoint and exit code 130.
"""
import argparse
import os
import sys

from recbole_robust.errors import Interrupted, OutputFailed, RecBoleRobustError, TrainingDiverged

EPILOG = """\
Any other RecBole parameter is given as --key=value and overrides config files, e.g.
  --epochs=20 --learning_rate=0.001 --train_batch_size=2048 --seed=2020 --gpu_id=0
  --eval_args="{'split': {'RS': [0.8, 0.1, 0.1]}, 'mode': 'uni100'}" --topk="[5,10,20]"
  --modalities="['image']"   (multimodal models: which item content features to use)
Adversarial training: --adv_targets="[item_features]" --adv_eps=0.1 --adv_lambda=1 --adv_type=fgm
  --adv_start_epoch=20 --adv_learner=adagrad   (defaults per model in properties/model/)
Attacks at test time (after training, or on --checkpoint): --attack=fgm --attack_eps="[0.05,0.1,0.2]"
  --attack_targets="[[user_embedding.weight,item_embedding.weight]]" --attack_metric=ndcg@10
  --attack="['fgm','pgd']" --attack_steps=10   (PGD: projected multi-step attack)
  --analysis="['promotion','rank_change','noise']" --noise_sigma="[0.01,0.1,1]" --noise_relative=True
During training: --valid_attack=fgm --valid_attack_eps=0.5   (attacked validation metrics every epoch)
One report over checkpoints: --dataset=tiktok --robustness_report VBPR=a.pth,b.pth AMR=c.pth,d.pth --attack=pgd
Data: plugin datasets (ml-100k, tiktok, amazon, filmtrust, ciaodvd, ml-1m) are searched for in
--data_path, then $RECBOLE_ROBUST_DATA, then ./dataset, and built once into --build_dir
(default saved/datasets). Other names are read as RecBole atomic files from <data_path>/<dataset>/.
"""


def build_parser():
    parser = Parser(
        prog="run_recbole_robust.py",
        allow_abbrev=False,  # --data=... must not become --data_path
        description="Train and evaluate a RecBole or recbole-robust model (RecBole-style run).",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--model", "-m", help="model name: a plugin model (e.g. VBPR) or any RecBole model (e.g. BPR)")
    parser.add_argument("--dataset", "-d", help="dataset name, e.g. ml-100k, tiktok, amazon, filmtrust, ciaodvd")
    parser.add_argument("--config_files", help="YAML config files, separated by spaces")
    parser.add_argument("--data_path", help="folder holding dataset folders (default: $RECBOLE_ROBUST_DATA, ./dataset)")
    parser.add_argument("--build_dir", help="where built plugin datasets are cached (default: saved/datasets)")
    parser.add_argument("--resume", metavar="CHECKPOINT|SEARCH",
                        help="continue training from a checkpoint (e.g. saved/<run>.last.pth); with --tune, "
                             "continue the interrupted search stored in this folder (ray_results/<name>)")
    parser.add_argument("--preset", help="evaluation protocol preset: amr (leave-one-out, 999 negatives, HR/NDCG@5/10/20)")
    parser.add_argument("--checkpoint", metavar="CHECKPOINT",
                        help="evaluate (and attack) this trained checkpoint instead of training")
    parser.add_argument("--compare", metavar="MODEL_A,MODEL_B",
                        help="train two models on the same split; paired t-test of their per-user test metrics")
    parser.add_argument("--robustness_report", nargs="+", metavar="[LABEL=]CKPT[,CKPT...]",
                        help="evaluate these checkpoints (one label per model, one checkpoint per seed) under the "
                             "attack / analysis settings and write one Markdown + HTML report")
    parser.add_argument("--report_dir", help="folder of --robustness_report (default: saved/reports/<dataset>-<time>)")
    parser.add_argument("--pretrained", metavar="CHECKPOINT",
                        help="start from a compatible model's checkpoint (e.g. VBPR for AMR); the adversary starts at once")
    search = parser.add_argument_group("hyper-parameter search (Ray Tune)")
    search.add_argument("--tune", metavar="SPACE_YAML",
                        help="run a Ray Tune search over this space (e.g. properties/search/AMR.yaml, or just AMR)")
    search.add_argument("--num_samples", type=int, default=1, help="samples of the space (grid entries are crossed)")
    search.add_argument("--scheduler", default="fifo", choices=["fifo", "asha"],
                        help="asha stops bad trials early on the valid metric")
    search.add_argument("--search_alg", default="random", choices=["random", "grid", "hyperopt"],
                        help="random/grid: Ray's variant generator; hyperopt: TPE (model-based)")
    search.add_argument("--cpus_per_trial", type=float, default=1)
    search.add_argument("--gpus_per_trial", type=float, default=0)
    search.add_argument("--concurrent_trials", type=int, help="trials run at once (default: as resources allow)")
    search.add_argument("--time_budget_s", type=float, help="stop the search after this many seconds")
    search.add_argument("--max_failures", type=int, default=1, help="retries of a failing trial")
    search.add_argument("--address", help="existing Ray cluster: auto or host:port (default: a local Ray)")
    search.add_argument("--ray_dir", default="ray_results", help="where searches are stored (default: ray_results)")
    parser.add_argument("--saved", default="True", choices=["True", "False"],
                        help="save checkpoints (default: True)")
    return parser


class ArgumentError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, as every other bad input
        raise ArgumentError(message)


def repeated_option(argv):
    seen = set()
    for arg in argv:
        if arg.startswith("--"):
            key = arg[2:].partition("=")[0]
            if key in seen:
                return key
            seen.add(key)
    return None


def main(argv=None):
    """Parse, validate, run; returns the exit code (2 for bad input, 1 for a diverged run)."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        from recbole_robust.config import parse_overrides

        repeated = repeated_option(argv)
        if repeated:
            raise ArgumentError(f"option --{repeated} is given more than once")
        args, rest = build_parser().parse_known_args(argv)
        # every other --key=value is a RecBole setting, parsed as a literal (never evaluated)
        config_dict = parse_overrides(rest)
        config_dict.update({k: getattr(args, k) for k in ("data_path", "build_dir") if getattr(args, k)})
        config_files = args.config_files.strip().split() if args.config_files else None
    except (ArgumentError, RecBoleRobustError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    try:
        from recbole_robust.pipelines import compare_models, parse_groups, robustness_report
        from recbole_robust.quick_start import run_recbole_robust

        if args.tune:
            from recbole_robust.tune import tune

            _, best, path = tune(
                args.model, args.dataset, args.tune, num_samples=args.num_samples, scheduler=args.scheduler,
                search_alg=args.search_alg, cpus_per_trial=args.cpus_per_trial, gpus_per_trial=args.gpus_per_trial,
                concurrent_trials=args.concurrent_trials, time_budget_s=args.time_budget_s,
                max_failures=args.max_failures, address=args.address, resume=args.resume, local_dir=args.ray_dir,
                config_file_list=config_files, config_dict=config_dict, preset=args.preset,
            )
            print(open(os.path.join(path, "results.md"), encoding="utf-8").read())
            print(f"results: {path}/results.csv" + (f", best config: {path}/best_config.yaml" if best else ""))
            return 0
        if args.robustness_report:
            _, paths = robustness_report(parse_groups(args.robustness_report), args.dataset, config_files, config_dict,
                                         args.preset, args.report_dir)
            print(f"robustness report: {paths['md']}\n  self-contained HTML: {paths['html']}")
            return 0
        if args.compare:
            _, table = compare_models(args.compare.split(","), args.dataset, config_files, config_dict, args.preset)
            print(table)
            return 0
        result = run_recbole_robust(
            model=args.model, dataset=args.dataset, config_file_list=config_files, config_dict=config_dict,
            saved=args.saved == "True", preset=args.preset, resume=args.resume, pretrained=args.pretrained,
            checkpoint=args.checkpoint,
        )
    except RecBoleRobustError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except (TrainingDiverged, OutputFailed) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Interrupted as e:
        print(f"error: {e}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
    if "attack" in result:
        print(f"attack report: {result['attack']['files']['md']}")
    if result["saved_model_file"]:
        print(f"checkpoint: {result['saved_model_file']}")
    return 0
