#!/usr/bin/env python
"""Execute notebooks in a Jupyter kernel and save them with their outputs, stamped and cleaned.

    python tools/run_nbs.py                          # every nbs/*.ipynb, one after another
    python tools/run_nbs.py nbs/11_thermometer.ipynb # one notebook (run it after editing that notebook)

Each notebook runs top to bottom in a fresh `python3` ipykernel (this venv's python), with its own
folder as the working directory and the folder of `settings.ini` first on `sys.path`, as under
`nbdev_test`. `MPLBACKEND`, `CI` and `TQDM_DISABLE` are removed from the kernel's environment, so
plots use the inline backend (saved as `image/png`) and progress shows as a Jupyter user sees it.
Cells nbdev never runs (`#| eval: false`, or calling `nbdev_export(`) are skipped and keep no
outputs; `#| slow` cells run. The first error stops that notebook, names the cell, and leaves the
file untouched; the other notebooks still run, and the exit code is 1.

Every executed code cell gets the cell metadata `{"minilearn": {"source": <hash>, "outputs": <n>}}`:
the first 16 hex digits of the sha256 of its source, and how many outputs it made.
`tools/check_nb_outputs.py` (run by `.ci/check_nbs.sh`) compares the stamps with the notebooks.
The notebook is then cleaned as `nbdev_clean` does (settings.ini keeps the `minilearn` key through
`allowed_cell_metadata_keys`), after `tempfile` folder names and the kernel's process id in text
outputs are replaced by fixed placeholders (`VOLATILE`), so that a rerun changes fewer lines.
"""
import argparse, hashlib, os, re, sys, tempfile, time
from pathlib import Path

STAMP_KEY = 'minilearn'
# Unset for the kernel: MPLBACKEND=Agg (set in CI) would turn off the inline backend and its image/png
# outputs; CI or TQDM_DISABLE turn off minilearn's progress display (minilearn/progress.py).
UNSET_IN_KERNEL = ('MPLBACKEND', 'CI', 'TQDM_DISABLE')


class NotebookError(Exception):
    "A cell of a notebook failed or timed out; the message names the notebook, the cell and what to do."


def source_hash(source) -> str:
    "The first 16 hex digits of the sha256 of a cell's `source` (a string or nbformat's list of lines)."
    if isinstance(source, list): source = ''.join(source)
    return hashlib.sha256(source.encode('utf-8')).hexdigest()[:16]


def is_skipped(cell) -> bool:
    "True for a cell nbdev never executes: not code, empty, `#| eval: false`, or calling `nbdev_export(`."
    from fastcore.basics import AttrDict
    from nbdev.process import extract_directives
    if cell['cell_type'] != 'code': return True
    source = ''.join(cell['source']) if isinstance(cell['source'], list) else cell['source']
    if not source.strip() or 'nbdev_export' + '(' in source: return True
    directives = extract_directives(AttrDict(source=source), remove=False)
    return directives.get('eval:', [''])[0].lower() == 'false'


def stamp(nb):
    "Record in each executed code cell of `nb` the hash of its source and its number of outputs."
    for cell in nb['cells']:
        if is_skipped(cell): cell['metadata'].pop(STAMP_KEY, None)
        else: cell['metadata'][STAMP_KEY] = {'source': source_hash(cell['source']),
                                              'outputs': len(cell.get('outputs', []))}
    return nb


# Parts of text outputs that change on every run and mean nothing to a reader: the names `tempfile`
# gives its folders (/tmp/tmpk3j_x9q2) and the kernel's process id in its cell file names
# (/tmp/ipykernel_32472/159659469.py). Timings, and results that depend on them, are left as they are.
VOLATILE = [(re.compile(re.escape(tempfile.gettempdir()) + r'/tmp[a-z0-9_]{8}\b'), '/tmp/tmpXXXXXXXX'),
            (re.compile(r'\bipykernel_\d+/'), 'ipykernel_PID/')]


def normalise(nb):
    "Replace the `VOLATILE` parts of the stream and text/plain outputs of `nb` (a plain dict) in place."
    def sub(text):
        if isinstance(text, list): return [sub(t) for t in text]
        for pattern, repl in VOLATILE: text = pattern.sub(repl, text)
        return text
    for cell in nb['cells']:
        for o in cell.get('outputs', []):
            if 'text' in o: o['text'] = sub(o['text'])
            if 'text/plain' in o.get('data', {}): o['data']['text/plain'] = sub(o['data']['text/plain'])
    return nb


def settings(folder):
    "nbdev's config from the settings.ini above `folder`; exits if nbdev_clean would drop the stamps."
    from nbdev.config import get_config
    cfg = get_config(path=folder)
    if STAMP_KEY not in cfg.get('allowed_cell_metadata_keys').split():
        sys.exit(f"settings.ini (in {cfg.config_path}) must have `allowed_cell_metadata_keys = {STAMP_KEY}`, "
                 "or cleaning drops the stamps")
    return cfg


def clean(nb, folder):
    "Clean `nb` (a plain dict, as json.load gives) in place as `nbdev_clean` does, with `settings(folder)`."
    from nbdev.clean import clean_nb
    cfg = settings(folder)
    clean_nb(nb, clear_all=False, allowed_metadata_keys=cfg.get('allowed_metadata_keys').split(),
             allowed_cell_metadata_keys=cfg.get('allowed_cell_metadata_keys').split(),
             clean_ids=cfg.clean_ids)
    return nb


def execute(path: Path, timeout: int = 600):
    "Run the notebook at `path` in a fresh `python3` kernel and return it with its outputs (not saved)."
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError, CellTimeoutError
    from nbdev.config import get_config

    class Client(NotebookClient):
        async def async_execute_cell(self, cell, cell_index, execution_count=None, store_history=True):
            if is_skipped(cell): return cell          # leave it as it is, without outputs
            self.current_index = cell_index
            return await super().async_execute_cell(cell, cell_index, execution_count, store_history)

    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == 'code': cell.outputs = []
    root = str(get_config(path=path.resolve().parent).config_path)
    # The kernel inherits this environment: make it a plain Jupyter user's, whoever runs the tool.
    env_before = {k: os.environ.get(k) for k in (*UNSET_IN_KERNEL, 'PYTHONPATH')}
    for k in UNSET_IN_KERNEL: os.environ.pop(k, None)
    os.environ['PYTHONPATH'] = os.pathsep.join(p for p in (root, env_before['PYTHONPATH']) if p)
    client = Client(nb, timeout=timeout, kernel_name='python3', allow_errors=False, force_raise_errors=True,
                    record_timing=False, resources={'metadata': {'path': str(path.resolve().parent)}})
    try: client.execute()
    except (CellExecutionError, CellTimeoutError) as e:
        cell = getattr(client, 'current_index', '?')
        raise NotebookError(f"{path}: cell {cell} (0-based, markdown cells counted) failed; the notebook was not "
                            f"saved. Fix the cell and run `python tools/run_nbs.py {path}` again.\n{e}")
    finally:
        for k, v in env_before.items():
            if v is None: os.environ.pop(k, None)
            else: os.environ[k] = v
    return nb


def run(path: Path, timeout: int = 600) -> float:
    "Execute, stamp, clean and save the notebook at `path`; return the seconds it took."
    import json, nbformat
    from execnb.nbio import write_nb
    start = time.time()
    settings(path.resolve().parent)                     # before spending a minute running the notebook
    nb = json.loads(nbformat.writes(execute(path, timeout)))  # as Jupyter would save it: text split in lines
    write_nb(clean(stamp(normalise(nb)), path.resolve().parent), path)  # cleaned and written as by nbdev_clean
    return time.time() - start


def main(argv=None):
    "Command line: run the notebooks given (default: all of nbs/) one after another; exit 1 if any failed."
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog='After editing a notebook, run this on it and commit the result.')
    p.add_argument('notebooks', nargs='*', type=Path,
                   help='notebooks to run (default: every notebook in nbs_path of the settings.ini above here)')
    p.add_argument('--timeout', type=int, default=600, help='seconds one cell may take (default 600)')
    args = p.parse_args(argv)
    if args.notebooks: paths = args.notebooks
    else:                                               # nbs_path of the settings.ini above the current folder
        from nbdev.config import get_config
        paths = [Path(os.path.relpath(p)) for p in sorted(get_config().nbs_path.glob('*.ipynb'))]
    total, failed = time.time(), []
    for path in paths:
        if not path.is_file(): sys.exit(f"{path}: no such notebook")
        try: print(f"{path}: {run(path, args.timeout):.1f} s", flush=True)
        except NotebookError as e:                      # go on with the others: notebooks are independent
            print(e, file=sys.stderr, flush=True)
            failed.append(str(path))
    print(f"{len(paths)} notebook(s) in {time.time() - total:.1f} s")
    if failed: sys.exit(f"Failed, left unchanged: {' '.join(failed)}")


if __name__ == '__main__': main()
