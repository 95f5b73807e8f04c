"""The bad-input case table: every case of ``tests/test_trust.py``'s case lists, run as the tests run
them (the command line in-process, in an empty folder holding its data and build folder), as Markdown:
the command, the exit code, the error line and what the run left on disk.

    python benchmarks/bad_input_table.py > bad_inputs.md
"""
import contextlib
import io
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import test_trust as cases  # noqa: E402  (the tests' own case lists)
from conftest import write_small_datasets  # noqa: E402

import recbole_robust_cli as cli  # noqa: E402

LISTS = {
    "data loss (--data_path=D)": (cases.DATA_LOSS, "data"),
    "refused after building": (cases.REFUSED_AFTER_BUILDING, "data"),
    "RecBole, atomic and feature files": (cases.REFUSED, "root"),
}


def run_case(make_args, takes):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        data = write_small_datasets(root / "D")
        args = make_args(data if takes == "data" else root)
        if takes == "data":
            args = [*args, f"--data_path={data}"] + (
                [] if any(a.startswith("--build_dir") for a in args) else [f"--build_dir={root / 'saved' / 'datasets'}"])
        before = cases.snapshot(root)
        err, cwd = io.StringIO(), os.getcwd()
        os.chdir(root)
        try:
            with contextlib.redirect_stderr(err):
                code = cli.main([*args, *cases.QUIET])
        finally:
            os.chdir(cwd)
        after = cases.snapshot(root)
        changed = sorted(set(after.items()) ^ set(before.items()))
        shown = " ".join(a.replace(tmp, "$TMP") for a in args)
        lines = [line for line in err.getvalue().splitlines() if line.startswith("error: ")]
        return shown, code, (lines[0].replace(tmp, "$TMP") if lines else ""), len({p for p, _ in changed})


def main():
    print("| kind | case | command | exit | error line | paths written or changed |")
    print("|---|---|---|---|---|---|")
    for kind, (table, takes) in LISTS.items():
        for name, (make_args, _) in table.items():
            shown, code, line, changed = run_case(make_args, takes)
            cell = line.replace("|", "\\|")
            print(f"| {kind} | {name} | `{shown}` | {code} | {cell} | {changed or 'none'} |")


if __name__ == "__main__":
    main()
