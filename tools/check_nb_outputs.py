#!/usr/bin/env python
"""Check that committed notebooks carry the outputs of their committed code (run by .ci/check_nbs.sh).

    python tools/check_nb_outputs.py                          # every notebook in nbs/
    python tools/check_nb_outputs.py nbs/11_thermometer.ipynb

`tools/run_nbs.py` stamps every code cell it executes with the hash of its source and its number
of outputs. A notebook fails (exit 1) when a code cell that nbdev runs
- has no stamp: it was never executed by tools/run_nbs.py, or its outputs and metadata were stripped;
- has a stamp for other source: the code was edited after its outputs were made (stale outputs);
- has another number of outputs than its stamp says: outputs stripped or edited by hand;
and when a cell nbdev never runs (`#| eval: false`) has outputs, or a code cell contains a
markdown heading as jupytext writes one in a code cell (see `HEADING`).
"""
import argparse, json, os, re, sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_nbs import STAMP_KEY, is_skipped, source_hash  # noqa: E402

# A markdown heading turned into comments, as jupytext writes markdown lines in a code cell: "# ## Title".
# Only at the start of a line (an indented "# # x" is a comment inside code) and only "#" then a space,
# 1 to 6 "#" and a space then text, so "#|" directives, "# %%" cell markers and "#" rules do not match.
# No code cell in nbs/ has such a line except the one this check was written for (11_thermometer, fixed).
HEADING = re.compile(r'^# #{1,6} \S')


def cell_problems(cell) -> list:
    "What is wrong with one cell's outputs, each as a short sentence; empty when nothing is."
    if cell['cell_type'] != 'code': return []
    source = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
    problems = [f"a markdown heading was swallowed into the code as a comment: {line!r}; move it and its "
                "paragraph into a markdown cell (in the jupytext twin, put `# %% [markdown]` above it)"
                for line in source.splitlines() if HEADING.match(line)]
    outputs, stamp = cell.get('outputs', []), cell.get('metadata', {}).get(STAMP_KEY)
    if is_skipped(cell):
        if outputs: problems.append(f"it is never run (`#| eval: false`) but has {len(outputs)} output(s)")
    elif not isinstance(stamp, dict):
        problems.append("it has no outputs stamp: never executed by tools/run_nbs.py, or its outputs were stripped")
    elif stamp.get('source') != source_hash(source):
        problems.append("its code changed after its outputs were made (stale outputs)")
    elif stamp.get('outputs') != len(outputs):
        problems.append(f"it has {len(outputs)} output(s) but was executed with {stamp.get('outputs')}: "
                        "outputs stripped or edited by hand")
    return problems


def notebook_problems(path) -> list:
    "Every problem in the notebook at `path`, as 'path: cell N (0-based, markdown cells counted): ...' lines."
    nb = json.loads(Path(path).read_text(encoding='utf-8'))
    return [f"{path}: cell {i} (0-based, markdown cells counted): {p}"
            for i, cell in enumerate(nb['cells']) for p in cell_problems(cell)]


def main(argv=None) -> int:
    "Command line: check the notebooks given (default: all in nbs_path); return 1 and explain on failure."
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('notebooks', nargs='*', type=Path,
                   help='notebooks to check (default: every notebook in nbs_path of the settings.ini above here)')
    args = p.parse_args(argv)
    if args.notebooks: paths = args.notebooks
    else:
        from nbdev.config import get_config
        paths = [Path(os.path.relpath(p)) for p in sorted(get_config().nbs_path.glob('*.ipynb'))]
    bad = {}
    for path in paths:
        problems = notebook_problems(path)
        if problems: bad[path] = problems
    if not bad:
        print(f"{len(paths)} notebook(s) carry the outputs of their code")
        return 0
    for problems in bad.values(): print('\n'.join(problems), file=sys.stderr)
    fix = ' '.join(str(p) for p in bad)
    print(f"\n{len(bad)} notebook(s) are not committed with the outputs of their code. Fix any heading named "
          f"above, then execute them and commit the result:\n  python tools/run_nbs.py {fix}", file=sys.stderr)
    return 1


if __name__ == '__main__': sys.exit(main())
