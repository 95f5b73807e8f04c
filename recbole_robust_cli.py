"""The ``recbole-robust`` command (and ``python run_recbole_robust.py``): parse, then call the package.

    recbole-robust [train] --model=M --dataset=D [--seeds 999 1 2] [--key=value ...]
    recbole-robust report  --dataset=D [LABEL=CKPT[,CKPT...] ...] [--models [Label=]Model ... --seeds ...]
    recbole-robust tune    --model=M --dataset=D --space=SPACE [search options]
    recbole-robust table   --table=mg3 [--seeds ...]

This module stands outside the ``recbole_robust`` package, whose import registers the plugin with RecBole
and so loads PyTorch and RecBole (seconds): ``--help`` and a malformed command line are answered before
the package is imported. Today's flags without a subcommand keep working (``--tune=SPACE``,
``--robustness_report ...``, ``--compare=A,B``).

Bad input (unknown model or dataset, missing or malformed files, invalid values) prints one line
``error: ...`` on stderr and exits with code 2; a training loss that turns NaN, or a full disk, stops
the run with one ``error:`` line (naming the checkpoint kept) and exit code 1; Ctrl-C with one line
naming the last complete checkpoint and exit code 130.
"""
import argparse
import os
import shlex
import sys

COMMANDS = ("train", "report", "tune", "table")
TABLE_NAMES = ("mg3", "mg4", "mg7", "mg9", "mg-fig3")
"""The tables of ``recbole_robust.tables.TABLES`` (named here so that ``--help`` lists them without importing the
package; a test keeps the two equal)."""

SETTINGS_HELP = """\
Any RecBole or plugin setting is given as --key=value (parsed as a literal, never evaluated) and overrides
config files, e.g.
  --epochs=20 --learning_rate=0.001 --train_batch_size=2048 --seed=2020 --gpu_id=0 --threads=1
  --eval_args="{'split': {'RS': [0.8, 0.1, 0.1]}, 'mode': 'uni100'}" --topk="[5,10,20]"
  --modalities="['image']"   (multimodal models: which item content features to use)
Adversarial training: --adv_targets="[item_features]" --adv_eps=0.1 --adv_lambda=1 --adv_type=fgm
  --adv_start_epoch=20 --adv_learner=adagrad   (defaults per model in properties/model/)
Mirror Gradient: --mirror_gradient=True --mg_alpha1=1.0 --mg_alpha2=0.1 --mg_interval=3; SAM: --sharpness=sam
Attacks at test time (after training, or on --checkpoint): --attack=fgm --attack_eps="[0.05,0.1,0.2]"
  --attack_targets="[[user_embedding.weight,item_embedding.weight]]" --attack_metric=ndcg@10
  --attack="['fgm','pgd']" --attack_steps=10   (PGD: projected multi-step attack)
  --analysis="['promotion','rank_change','noise']" --noise_sigma="[0.01,0.1,1]" --noise_relative=True
During training: --valid_attack=fgm --valid_attack_eps=0.5   (attacked validation metrics every epoch)
Data: plugin datasets (ml-100k, tiktok, amazon, filmtrust, ciaodvd, ml-1m) are searched for in
--data_path, then $RECBOLE_ROBUST_DATA, then ./dataset, and built once into --build_dir
(default saved/datasets). Other names are read as RecBole atomic files from <data_path>/<dataset>/.
Every option is documented in docs/options.md.
"""


class ArgumentError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit code 2, as every other bad input
        raise ArgumentError(message)


def _parser(command, description, epilog=SETTINGS_HELP):
    prog = "recbole-robust" if command == "train" else f"recbole-robust {command}"
    return Parser(prog=prog, description=description, epilog=epilog, allow_abbrev=False,  # --data must not be --data_path
                  formatter_class=argparse.RawDescriptionHelpFormatter)


def _data_options(parser, model=True):
    if model:
        parser.add_argument("--model", "-m", help="model name: a plugin model (e.g. VBPR) or any RecBole model (e.g. BPR)")
    parser.add_argument("--dataset", "-d", help="dataset name, e.g. ml-100k, tiktok, amazon, filmtrust, ciaodvd")
    parser.add_argument("--config_files", help="YAML config files, separated by spaces")
    parser.add_argument("--data_path", help="folder holding dataset folders (default: $RECBOLE_ROBUST_DATA, ./dataset)")
    parser.add_argument("--build_dir", help="where built plugin datasets are cached (default: saved/datasets)")
    parser.add_argument("--preset", help="evaluation protocol preset: amr, acae, mg, vaegan, vaegan_strong")


def _search_options(parser):
    search = parser.add_argument_group("hyper-parameter search (Ray Tune)")
    search.add_argument("--num_samples", type=int, default=1, help="samples of the space (grid entries are crossed)")
    search.add_argument("--scheduler", default="fifo", choices=["fifo", "asha"],
                        help="asha stops bad trials early on the valid metric")
    search.add_argument("--search_alg", default="random", choices=["random", "grid", "hyperopt"],
                        help="random/grid: Ray's variant generator; hyperopt: TPE (model-based)")
    search.add_argument("--cpus_per_trial", type=float, default=1, help="CPUs (and torch threads) of each trial")
    search.add_argument("--gpus_per_trial", type=float, default=0)
    search.add_argument("--concurrent_trials", type=int, help="trials run at once (default: as resources allow)")
    search.add_argument("--time_budget_s", type=float, help="stop the search after this many seconds")
    search.add_argument("--max_failures", type=int, default=1, help="retries of a failing trial")
    search.add_argument("--address", help="existing Ray cluster: auto or host:port (default: a local Ray)")
    search.add_argument("--ray_dir", default="ray_results", help="where searches are stored (default: ray_results)")
    return search


def _report_options(parser):
    parser.add_argument("--report_dir", help="the report's folder (default: saved/reports/<dataset>-<time>)")
    parser.add_argument("--models", nargs="+", metavar="[LABEL=]MODEL",
                        help="train these models (once per seed of --seeds) and report on them")
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED", help="one run per seed (e.g. 999 1 2)")
    parser.add_argument("--set", action="append", metavar="[LABEL.]KEY=VALUE",
                        help="a setting of every run, or of one label's runs (repeatable)")


def _count_or_share(text):
    """``5`` -> 5 fake users, ``0.01`` -> a share (checked with the other settings)."""
    try:
        return int(text)
    except ValueError:
        try:
            return float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a count or a share") from None


def build_parser(command="train"):
    """The parser of one subcommand (``train`` also takes today's flags without a subcommand)."""
    if command == "report":
        parser = _parser("report", "Robustness report (Markdown, HTML, CSV, LaTeX, PNG) over trained checkpoints "
                                   "(one label per model, one checkpoint per seed), or over models trained here "
                                   "(--models, --seeds).")
        parser.add_argument("checkpoints", nargs="*", metavar="[LABEL=]CKPT[,CKPT...]")
        _data_options(parser, model=False)
        _report_options(parser)
        grid = parser.add_argument_group("poisoning grid (with --models): model x defence x attack x budget")
        grid.add_argument("--poisons", nargs="+", metavar="ATTACK",
                          help="retrain every model on data with fake users: random average bandwagon segment pga")
        grid.add_argument("--budgets", nargs="+", type=_count_or_share, metavar="N|SHARE",
                          help="fake users per attack: a count or a share of the real users (default: 0.01)")
        grid.add_argument("--defences", nargs="+", metavar="DEFENCE",
                          help="none (default) pca stats (detectors) adv (BPR->APR, VBPR->AMR) mg sam")
        return parser
    if command == "tune":
        parser = _parser("tune", "Ray Tune search over a space of settings (properties/search/<Model>.yaml).")
        _data_options(parser)
        parser.add_argument("--space", required=True, metavar="SPACE_YAML",
                            help="the search space (e.g. properties/search/AMR.yaml, or just AMR)")
        parser.add_argument("--resume", metavar="SEARCH", help="continue the interrupted search stored in this folder")
        _search_options(parser)
        return parser
    if command == "table":
        parser = _parser("table", "A paper's table: its models trained once per seed, then one report "
                                  f"(tables: {', '.join(TABLE_NAMES)}; see the README).")
        parser.add_argument("--table", metavar="NAME", help=f"one of {', '.join(TABLE_NAMES)}")
        _data_options(parser, model=False)
        _report_options(parser)
        parser.add_argument("--mirror", action="store_true", default=None,
                            help="run every model with and without Mirror Gradient")
        return parser
    parser = _parser("train", "Train and evaluate a RecBole or recbole-robust model (a RecBole-style run). "
                              f"Subcommands: {', '.join(COMMANDS)} (recbole-robust COMMAND --help).")
    _data_options(parser)
    parser.add_argument("--seeds", type=int, nargs="+", metavar="SEED",
                        help="one run per seed, then the per-seed table and mean ± std")
    parser.add_argument("--resume", metavar="CHECKPOINT|SEARCH",
                        help="continue training from a checkpoint (e.g. saved/<run>.last.pth); with --tune, "
                             "continue the interrupted search stored in this folder (ray_results/<name>)")
    parser.add_argument("--checkpoint", metavar="CHECKPOINT",
                        help="evaluate (and attack) this trained checkpoint instead of training")
    parser.add_argument("--pretrained", metavar="CHECKPOINT",
                        help="start from a compatible model's checkpoint (e.g. VBPR for AMR); the adversary starts at once")
    parser.add_argument("--saved", default="True", choices=["True", "False"], help="save checkpoints (default: True)")
    parser.add_argument("--compare", metavar="MODEL_A,MODEL_B",
                        help="train two models on the same split; paired t-test of their per-user test metrics")
    parser.add_argument("--robustness_report", nargs="+", metavar="[LABEL=]CKPT[,CKPT...]",
                        help="the same as: recbole-robust report CKPTS ...")
    parser.add_argument("--report_dir", help="folder of --robustness_report (default: saved/reports/<dataset>-<time>)")
    parser.add_argument("--tune", metavar="SPACE_YAML", help="the same as: recbole-robust tune --space=SPACE_YAML ...")
    _search_options(parser)
    return parser


def repeated_option(argv):
    seen = set()
    for arg in argv:
        if arg.startswith("--"):
            key = arg[2:].partition("=")[0]
            if key in seen:
                return key
            seen.add(key)
    return None


def parse(argv):
    """``(command, options, the other arguments)`` of a command line, or ``ArgumentError``; the package is not
    imported."""
    command = argv[0] if argv and argv[0] in COMMANDS else "train"
    argv = argv[1:] if argv and argv[0] == command else argv
    repeated = repeated_option(argv)
    if repeated and repeated != "set":
        raise ArgumentError(f"option --{repeated} is given more than once")
    args, rest = build_parser(command).parse_known_args(argv)
    return command, args, rest


def run(command, args, rest, argv):
    """Call the package for a parsed command line; returns the exit code."""
    from recbole_robust import pipelines
    from recbole_robust.config import parse_overrides

    settings = parse_overrides(rest)  # every other --key=value is a setting, parsed as a literal (never evaluated)
    settings.update({k: getattr(args, k) for k in ("data_path", "build_dir") if getattr(args, k)})
    config_files = args.config_files.strip().split() if args.config_files else None
    line = shlex.join(["recbole-robust", *argv])
    if command == "tune" or args_get(args, "tune"):
        from recbole_robust.tune import read_search_space, trial_count, tune

        space = args.space if command == "tune" else args.tune
        trials = trial_count(read_search_space(space), args.num_samples, args.search_alg)
        print(f"search over {space}: {trials} trial{'s' if trials != 1 else ''}", flush=True)
        _, best, path = tune(
            args.model, args.dataset, space, num_samples=args.num_samples,
            scheduler=args.scheduler, search_alg=args.search_alg, cpus_per_trial=args.cpus_per_trial,
            gpus_per_trial=args.gpus_per_trial, concurrent_trials=args.concurrent_trials,
            time_budget_s=args.time_budget_s, max_failures=args.max_failures, address=args.address,
            resume=args.resume, local_dir=args.ray_dir, config_file_list=config_files, config_dict=settings,
            preset=args.preset)
        print(open(os.path.join(path, "results.md"), encoding="utf-8").read())
        print(f"results: {path}/results.csv" + (f", best config: {path}/best_config.yaml" if best else ""))
        return 0
    if command == "table":
        from recbole_robust.tables import paper_table

        paths, table = paper_table(args.table, args.seeds, args.dataset, args.preset, args.models,
                                   args.set or (), args.mirror, config_files, settings, args.report_dir, line)
        print(f"{table}\n\nreport: {paths['md']}\n  self-contained HTML: {paths['html']}\n  LaTeX: {paths['tex']}")
        return 0
    if command == "report" or args_get(args, "robustness_report"):
        checkpoints = args.checkpoints if command == "report" else args.robustness_report
        if command == "report" and args.models:
            if checkpoints:
                raise_error("report takes checkpoints or --models, not both")
            variants = pipelines.parse_variants(args.models, args.set or ())
            if args.poisons or args.defences or args.budgets:
                variants = pipelines.poison_grid(variants, args.poisons or [], args.budgets or [0.01],
                                                 args.defences or ["none"])
            _, paths, _ = pipelines.train_and_report(variants, args.dataset, args.seeds, config_files, settings,
                                                     args.preset, args.report_dir, line)
        else:
            if not checkpoints:
                raise_error("report needs checkpoints (LABEL=CKPT[,CKPT...]) or --models")
            if command == "report" and (args.seeds or args.set or args.poisons or args.defences or args.budgets):
                raise_error("--seeds, --set, --poisons, --budgets and --defences go with --models (checkpoints are "
                            "evaluated with their own seed and data)")
            _, paths = pipelines.robustness_report(pipelines.parse_groups(checkpoints), args.dataset, config_files,
                                                   settings, args.preset, args.report_dir, line)
        print(f"robustness report: {paths['md']}\n  self-contained HTML: {paths['html']}\n  LaTeX: {paths['tex']}")
        return 0
    if args.compare:
        _, table = pipelines.compare_models(args.compare.split(","), args.dataset, config_files, settings, args.preset)
        print(table)
        return 0
    if args.seeds:
        if args.resume or args.checkpoint or args.pretrained:
            raise_error("--seeds trains one run per seed: not with --resume, --checkpoint or --pretrained")
        results, table = pipelines.train_seeds(args.model, args.dataset, args.seeds, config_files, settings,
                                               args.preset, saved=args.saved == "True")
        print(table)
        for seed, result in zip(args.seeds, results):
            if result["saved_model_file"]:
                print(f"checkpoint (seed {seed}): {result['saved_model_file']}")
        return 0
    from recbole_robust.quick_start import run_recbole_robust

    result = run_recbole_robust(
        model=args.model, dataset=args.dataset, config_file_list=config_files, config_dict=settings,
        saved=args.saved == "True", preset=args.preset, resume=args.resume, pretrained=args.pretrained,
        checkpoint=args.checkpoint,
    )
    if result is None:  # the processes of a machine other than the first of a multi-machine group
        print("done: this machine's processes have ended; the first machine (group_offset 0) writes the results")
        return 0
    for name, analysis in result["analyses"].items():
        print(f"{name}: {analysis.files['md']}")
    if result["saved_model_file"]:
        print(f"checkpoint: {result['saved_model_file']}")
    return 0


def args_get(args, name):
    return getattr(args, name, None)


def raise_error(message):
    from recbole_robust.errors import RecBoleRobustError

    raise RecBoleRobustError(message)


def main(argv=None):
    """Parse, validate, run; returns the exit code (2 for bad input, 1 for a diverged run or a full disk, 130 for
    Ctrl-C)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        parsed = parse(argv)
    except ArgumentError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from recbole_robust.errors import Interrupted, OutputFailed, RecBoleRobustError, TrainingDiverged

    try:
        return run(*parsed, argv)
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


if __name__ == "__main__":
    sys.exit(main())
