"""``mobilenets train`` (issue 8): a run end to end, one-line errors, torchrun with two CPU processes (gloo)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mobilenets.cli import main
from tests.digits import write_digits_folder

ROOT = Path(__file__).resolve().parent.parent
TINY = ["--model", "mobilenet_v3_small_050", "--input-size", "32", "--batch-size", "8", "--workers", "0",
        "--augment", "none", "--quiet"]


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> tuple[Path, Path]:
    return write_digits_folder(tmp_path_factory.mktemp("digits"), per_class=6)


def test_train_then_validate_and_predict_the_result(digits, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["train", str(digits[0]), "--val-dir", str(digits[1]), "--epochs", "2", "--output", str(run),
                 *TINY]) == 0
    out = capsys.readouterr().out
    assert "best validation top-1" in out and str(run / "best.safetensors") in out
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 2
    assert main(["validate", str(digits[1]), "--checkpoint", str(run / "best.safetensors"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    best = max(json.loads(line)["val_top1"] for line in (run / "metrics.jsonl").read_text().splitlines())
    assert report["n"] == 10 and report["top1"] == pytest.approx(best)
    # the same command again is refused (never overwritten); --resume after the last epoch has nothing to do
    assert main(["train", str(digits[0]), "--val-dir", str(digits[1]), "--epochs", "2", "--output", str(run),
                 *TINY]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "already holds a training run" in err[0] and "--resume" in err[0]
    assert main(["train", str(digits[0]), "--val-dir", str(digits[1]), "--epochs", "3", "--output", str(run),
                 "--resume", *TINY]) == 0
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 3


@pytest.mark.parametrize(("extra", "status", "message"), [
    (["--model", "nope"], 1, "nope"),
    (["--freeze", "top"], 2, "--freeze"),
    (["--resume"], 2, "--resume needs --output"),
    (["--val-split", "1.5"], 2, "--val-split"),
    (["--val-dir", "/no/such/dir"], 1, "/no/such/dir"),
])
def test_train_errors_are_one_line(digits, tmp_path, capsys, extra, status, message):
    argv = ["train", str(digits[0]), "--epochs", "1", *TINY, *extra]
    if "--resume" not in extra:
        argv += ["--output", str(tmp_path / "run")]
    assert main(argv) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert message in err[-1] and (status == 2 or len(err) == 1)
    assert not (tmp_path / "run" / "last.pt").exists()


def test_torchrun_two_cpu_processes(digits, tmp_path):
    run = tmp_path / "run"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m",
           "mobilenets", "train", str(digits[0]), "--val-dir", str(digits[1]), "--epochs", "2",
           "--output", str(run), "--device", "cpu", *TINY]
    # its own session: torchrun's elastic agent signals process groups when workers end, never ours
    proc = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180,
                          start_new_session=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("best validation top-1") == 1  # rank 0 alone prints and writes
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in records] == [1, 2]
    assert not [p for p in run.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    # read back in a fresh process too: this one has run the rest of the suite's native libraries and threads
    check = ("import sys, torch; from mobilenets import from_checkpoint; run = sys.argv[1]; "
             "state = torch.load(run + '/last.pt', weights_only=True); "
             "assert state['args']['world_size'] == 2 and len(state['rng']) == 2, state['args']; "
             "model = from_checkpoint(run + '/best.safetensors'); "
             "assert model.pretrained_cfg['categories'] == [str(d) for d in range(10)]; print('ok')")
    done = subprocess.run([sys.executable, "-c", check, str(run)], env=env, capture_output=True, text=True,
                          timeout=120, start_new_session=True)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-3000:]
