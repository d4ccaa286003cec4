"""tools/check_nb_outputs.py fails on notebooks whose outputs are missing or stale, and passes on stamped ones.

No kernel runs here: the notebooks are built with nbformat, given made-up outputs and stamped with
tools/run_nbs.py's `stamp`, as if that tool had executed them.
"""
import json, shutil, subprocess, sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip('nbformat')
pytest.importorskip('nbdev')
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / 'tools'))
from check_nb_outputs import main as check  # noqa: E402
from run_nbs import STAMP_KEY, clean, stamp  # noqa: E402


def executed_nb():
    "A notebook as tools/run_nbs.py leaves it: markdown, code with and without outputs, an `eval: false` cell."
    return new_notebook(cells=[
        new_markdown_cell('# A title\n\nSome prose.'),
        new_code_cell('x = 1 + 1', outputs=[]),
        new_code_cell("print(x)\nx", outputs=[new_output('stream', name='stdout', text='2\n'),
                                             new_output('execute_result', data={'text/plain': '2'})]),
        new_code_cell('#| eval: false\nimport sys\nsys.exit(main())'),
        new_code_cell(''),                           # empty: never executed, needs no stamp
    ])


def write(nb, path):
    "Stamp-free helper: write `nb` with nbformat and return the path."
    nbformat.write(nb, path)
    return path


@pytest.fixture
def stamped(tmp_path):
    return write(stamp(executed_nb()), tmp_path / 'nb.ipynb')


def test_stamped_notebook_passes(stamped, capsys):
    assert check([str(stamped)]) == 0
    assert 'carry the outputs' in capsys.readouterr().out


def test_ci_command_line_fails_with_what_to_do(tmp_path):
    nb = write(executed_nb(), tmp_path / 'never_run.ipynb')
    r = subprocess.run([sys.executable, str(ROOT / 'tools' / 'check_nb_outputs.py'), str(nb)],
                       capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 1, r.stdout + r.stderr
    assert 'never_run.ipynb: cell 1 ' in r.stderr and 'no outputs stamp' in r.stderr
    assert f'python tools/run_nbs.py {nb}' in r.stderr


def test_outputs_stripped_fail(stamped, capsys):
    from nbdev.clean import clean_nb
    nb = json.loads(stamped.read_text())
    clean_nb(nb, clear_all=True)                     # what `nbdev_clean --clear_all` does
    stamped.write_text(json.dumps(nb))
    assert check([str(stamped)]) == 1
    assert 'cell 2 (0-based, markdown cells counted): it has no outputs stamp' in capsys.readouterr().err


def test_outputs_emptied_but_stamp_kept_fails(stamped, capsys):
    nb = nbformat.read(stamped, as_version=4)
    nb.cells[2].outputs = []
    write(nb, stamped)
    assert check([str(stamped)]) == 1
    err = capsys.readouterr().err
    assert 'cell 2 (0-based, markdown cells counted): it has 0 output(s) but was executed with 2' in err


def test_cell_edited_after_stamping_fails(stamped, capsys):
    nb = nbformat.read(stamped, as_version=4)
    nb.cells[1].source = 'x = 1 + 2'
    write(nb, stamped)
    assert check([str(stamped)]) == 1
    assert 'cell 1 (0-based, markdown cells counted): its code changed' in capsys.readouterr().err


def test_new_unexecuted_cell_fails(stamped, capsys):
    nb = nbformat.read(stamped, as_version=4)
    nb.cells.append(new_code_cell('y = 3'))
    write(nb, stamped)
    assert check([str(stamped)]) == 1
    assert 'cell 5 (0-based, markdown cells counted): it has no outputs stamp' in capsys.readouterr().err


def test_swallowed_heading_fails_even_when_stamped(tmp_path, capsys):
    nb = executed_nb()
    nb.cells[1].source = 'x = 1 + 1\n#\n# ## Training\n#\n# The loop.'
    path = write(stamp(nb), tmp_path / 'nb.ipynb')
    assert check([str(path)]) == 1
    assert "swallowed into the code as a comment: '# ## Training'" in capsys.readouterr().err


@pytest.mark.parametrize('line', ['#| export', '# %% a comment', '#', '    # # indented comment', '# #1 not a heading',
                                  '## a comment'])
def test_comments_that_are_not_headings_pass(tmp_path, line):
    nb = executed_nb()
    nb.cells[1].source = f'x = 1 + 1\n{line}'
    assert check([str(write(stamp(nb), tmp_path / 'nb.ipynb'))]) == 0


@pytest.mark.parametrize('first', ['#| eval: false', '#|eval: false', '#| eval:false', '#| export\n#| eval: false'])
def test_eval_false_cell_needs_no_stamp_and_no_outputs(tmp_path, first, capsys):
    nb = stamp(executed_nb())
    nb.cells[3].source = f'{first}\nraise SystemExit'
    assert STAMP_KEY not in nb.cells[3].metadata
    path = write(nb, tmp_path / 'nb.ipynb')
    assert check([str(path)]) == 0
    nb.cells[3].outputs = [new_output('stream', name='stdout', text='ran\n')]
    write(nb, path)
    assert check([str(path)]) == 1
    assert 'cell 3 (0-based, markdown cells counted): it is never run' in capsys.readouterr().err


def test_stamps_survive_nbdev_clean_and_a_jupytext_round_trip(tmp_path):
    "settings.ini keeps the stamp through nbdev_clean; an edit in the jupytext twin makes only that cell stale."
    shutil.copy(ROOT / 'settings.ini', tmp_path)
    (tmp_path / 'nbs').mkdir()
    path = tmp_path / 'nbs' / 'nb.ipynb'
    nb = json.loads(nbformat.writes(stamp(executed_nb())))
    path.write_text(json.dumps(clean(nb, tmp_path)))
    run = lambda *cmd: subprocess.run(cmd, cwd=tmp_path, check=True, capture_output=True)
    run('nbdev_clean', '--fname', str(path))
    assert check([str(path)]) == 0
    run('jupytext', '--to', 'py:percent', str(path), '-o', str(path.with_suffix('.py')))
    twin = path.with_suffix('.py')
    twin.write_text(twin.read_text().replace('x = 1 + 1', 'x = 1 + 2'))
    run('jupytext', '--to', 'ipynb', '--update', str(twin), '-o', str(path))
    run('nbdev_clean', '--fname', str(path))
    cells = json.loads(path.read_text())['cells']
    assert cells[2]['metadata'][STAMP_KEY]['outputs'] == 2 and len(cells[2]['outputs']) == 2   # unchanged cell
    assert check([str(path)]) == 1                                                                # edited cell 1


@pytest.mark.parametrize('name', ['09a_main.ipynb', '11_thermometer.ipynb', '12_digit_classifier.ipynb'])
def test_real_notebook_stripped_fails_and_stamped_passes(tmp_path, name, capsys):
    "A copy of a notebook of nbs/: stripped of its outputs it fails; stamped (no heading swallowed) it passes."
    from nbdev.clean import clean_nb
    nb = json.loads((ROOT / 'nbs' / name).read_text(encoding='utf-8'))
    clean_nb(nb, clear_all=True)
    path = tmp_path / name
    path.write_text(json.dumps(nb))
    assert check([str(path)]) == 1
    assert f'python tools/run_nbs.py {path}' in capsys.readouterr().err
    path.write_text(json.dumps(stamp(nb)))
    assert check([str(path)]) == 0, capsys.readouterr().err


def test_ci_runs_the_check_after_the_export_check():
    lines = (ROOT / '.ci' / 'check_nbs.sh').read_text().splitlines()
    assert 'python tools/check_nb_outputs.py' in lines
    assert lines.index('python tools/check_nb_outputs.py') > lines.index('nbdev_clean')


def test_normalise_replaces_temporary_folder_names_and_kernel_pids():
    import tempfile
    from run_nbs import normalise
    tmp = tempfile.gettempdir()
    nb = {'cells': [{'cell_type': 'code', 'outputs': [
        {'output_type': 'stream', 'text': [f'saved to {tmp}/tmpk3j_x9q2/models/a.pth\n', 'kept: /data/tmpk3j_x9q2\n']},
        {'output_type': 'execute_result', 'data': {'text/plain': ['File /tmp/ipykernel_32472/159659469.py:2'],
                                                   'text/html': [f'{tmp}/tmpk3j_x9q2']}}]}]}
    outputs = normalise(nb)['cells'][0]['outputs']
    assert outputs[0]['text'] == ['saved to /tmp/tmpXXXXXXXX/models/a.pth\n', 'kept: /data/tmpk3j_x9q2\n']
    assert outputs[1]['data']['text/plain'] == ['File /tmp/ipykernel_PID/159659469.py:2']
    assert outputs[1]['data']['text/html'] == [f'{tmp}/tmpk3j_x9q2']      # HTML is left alone


def test_ci_check_script_fails_on_a_committed_notebook_stripped_of_its_outputs(tmp_path):
    "The whole .ci/check_nbs.sh on a clone: passes as committed, fails once a stripped notebook is committed."
    if shutil.which('git') is None or shutil.which('nbdev_export') is None: pytest.skip('needs git and nbdev')
    repo = tmp_path / 'repo'
    run = lambda *cmd: subprocess.run(cmd, cwd=repo, capture_output=True, text=True)
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(repo)], check=True)
    git = ['git', '-c', 'user.name=t', '-c', 'user.email=t@example.invalid']
    passed = run('bash', '.ci/check_nbs.sh')
    assert passed.returncode == 0, passed.stdout + passed.stderr
    assert run('nbdev_clean', '--clear_all', '--fname', 'nbs/10_fitting_a_line.ipynb').returncode == 0
    assert run(*git, 'commit', '-qam', 'strip outputs').returncode == 0     # committed: the agreement check is happy
    failed = run('bash', '.ci/check_nbs.sh')
    assert failed.returncode != 0
    assert '10_fitting_a_line.ipynb' in failed.stdout + failed.stderr and 'run_nbs.py' in failed.stdout + failed.stderr
