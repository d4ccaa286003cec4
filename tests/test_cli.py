"Tests of the `minilearn` command line: the demo end to end in a fresh process, its options, and its errors."
import os, re, subprocess, sys

import pytest

from minilearn.cli import build_parser, demo, main

PNG = b'\x89PNG\r\n\x1a\n'


def run_cli(*args, timeout=300):
    "Run `python -m minilearn ARGS` in a fresh process, as a user would."
    return subprocess.run([sys.executable, '-m', 'minilearn', *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, 'MPLBACKEND': 'Agg'})


def test_demo_end_to_end(tmp_path):
    out = tmp_path / 'demo'
    r = run_cli('demo', '--epochs', '2', '--out', str(out))
    assert r.returncode == 0, r.stderr
    assert 'Traceback' not in r.stderr
    acc = float(re.search(r'final validation accuracy: ([0-9.]+)', r.stdout).group(1))
    assert acc >= 0.9
    assert 'lr_find suggests lr' in r.stdout
    assert re.search(r'^epoch\s+train_loss\s+valid_loss\s+accuracy', r.stdout, re.M)    # the epoch table
    assert len(re.findall(r'^[01]\s+\d', r.stdout, re.M)) == 2                           # one row per epoch
    assert 'why it stopped: ran all 2 epochs' in r.stdout
    for name in ('loss.png', 'lr_find.png'):
        data = (out / name).read_bytes()
        assert data[:8] == PNG and len(data) > 5000, name
        assert str(out / name) in r.stdout                                               # its path is printed


@pytest.mark.parametrize('args, words', [
    (['demo', '--epochs', '-1'], '--epochs'),
    (['demo', '--epochs', '0'], '--epochs'),
    (['demo', '--epochs', 'two'], '--epochs'),
    (['demo', '--lr', '-0.1'], '--lr'),
    (['demo', '--lr', 'inf'], '--lr'),
    (['demo', '--max-time', '0'], '--max-time'),
    (['demo', '--seed', 'x'], '--seed'),
    (['demo', '--frobnicate'], '--frobnicate'),
    (['fly'], 'fly'),
    ([], 'COMMAND'),
])
def test_bad_options_one_line_exit_2(args, words, capsys):
    assert main(args) == 2
    out, err = capsys.readouterr()
    assert out == '' and err.count('\n') == 1 and 'error' in err and words in err, err


def test_unwritable_out(tmp_path, capsys):
    blocker = tmp_path / 'file'
    blocker.write_text('in the way')
    for out in (blocker, blocker / 'sub'):
        assert main(['demo', '--out', str(out)]) == 2
        o, err = capsys.readouterr()
        assert o == '' and err.count('\n') == 1 and '--out' in err and str(out) in err, err
    assert blocker.read_text() == 'in the way'          # nothing was written


def test_bad_option_creates_nothing(tmp_path, capsys):
    assert main(['demo', '--epochs', '-3', '--out', str(tmp_path / 'o')]) == 2
    assert not (tmp_path / 'o').exists()                  # refused before anything was created


def test_help(capsys):
    assert main(['--help']) == 0
    assert 'demo' in capsys.readouterr().out
    assert main(['demo', '--help']) == 0
    text = capsys.readouterr().out
    for opt in ('--epochs', '--lr', '--max-time', '--seed', '--out', '--no-lr-find', '--quiet'):
        assert opt in text


def test_parser_defaults():
    a = build_parser().parse_args(['demo'])
    assert (a.epochs, a.lr, a.max_time, a.seed, a.out, a.lr_find, a.quiet) == (8, None, None, 0, 'minilearn-demo', True, False)


def test_quiet_lr_and_no_lr_find(tmp_path, capsys):
    assert main(['demo', '--epochs', '1', '--lr', '0.002', '--no-lr-find', '--quiet', '--out', str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert 'final validation accuracy' in out and 'train_loss' not in out
    assert 'lr_find suggests' not in out and 'lr_find plot' not in out and 'lr_max = 2.00e-03' not in out
    assert (tmp_path / 'loss.png').read_bytes()[:8] == PNG and not (tmp_path / 'lr_find.png').exists()


def test_max_time_stops_with_budget(tmp_path):
    lines = []
    res = demo(epochs=100, lr=2e-3, max_time=0.3, lr_find=False, out=tmp_path, log=lines.append)
    assert res['stop_reason'].startswith('Budget') and len(res['history']['epoch']) < 100
    assert res['lr'] == 2e-3 and res['suggested_lr'] is None
    assert any(l.startswith('why it stopped: Budget') for l in lines)


@pytest.mark.parametrize('kwargs', [{'epochs': 0}, {'epochs': 2.5}, {'epochs': True}, {'lr': 0.}, {'lr': float('nan')},
                                    {'max_time': -1}, {'seed': -1}])
def test_demo_refuses_bad_arguments_before_doing_anything(tmp_path, kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        demo(out=tmp_path / 'never', **kwargs)
    assert not (tmp_path / 'never').exists()
