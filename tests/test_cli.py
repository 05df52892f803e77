"""The headless commands and the app's command line."""

import subprocess
import sys
from pathlib import Path

import pytest

from lab.cli import main
from ui.__main__ import parse_args


def test_help_lists_the_commands():
    out = subprocess.run([sys.executable, "-m", "lab", "--help"], capture_output=True, text=True, check=True).stdout
    assert "generate" in out and "models" in out


def test_generate_streams_a_reply_from_a_local_model(tiny_model_dir, capsys):
    code = main(["generate", "--prompt", "Hello", "--model", str(tiny_model_dir), "--max-new-tokens", "5"])
    assert code == 0
    assert capsys.readouterr().out.strip()


def test_generate_with_a_bad_model_exits_non_zero_with_one_sentence(capsys):
    assert main(["generate", "--prompt", "Hello", "--model", "/no/such/model"]) == 2
    err = capsys.readouterr().err
    assert "error: There is no folder at /no/such/model" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("prompt", ["", "   "])
def test_generate_refuses_an_empty_prompt(prompt, capsys):
    assert main(["generate", "--prompt", prompt]) == 2
    assert "error: The prompt is empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flag", "value", "named"), [("--max-steps", "-5", "max_steps"), ("--learning-rate", "1e9", "learning_rate")]
)
def test_train_refuses_values_out_of_range_with_the_range(tmp_path, capsys, flag, value, named):
    assert main(["train", "sft", "--workspace", str(tmp_path), flag, value]) == 2
    err = capsys.readouterr().err
    assert f"key '{named}'" in err and "must be in [" in err


def test_the_installed_commands_work_from_any_folder(tmp_path):
    """`pip install -e .` (in the README's set-up) gives a `lab` command and `import lab` outside the checkout."""
    bin_dir = Path(sys.executable).parent
    out = subprocess.run([bin_dir / "lab", "--help"], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert "generate" in out.stdout
    code = "from lab import Lab; print(Lab.__doc__.split(':')[0])"
    imported = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert imported.stdout.strip()
    app = subprocess.run([bin_dir / "alignment-lab", "--help"], cwd=tmp_path, capture_output=True, text=True)
    assert app.returncode == 0 and "--auth" in app.stdout


def test_models_lists_the_embedded_default(capsys):
    assert main(["models"]) == 0
    assert "smollm2-135m-instruct" in capsys.readouterr().out


def test_app_binds_to_localhost_by_default():
    args = parse_args([])
    assert (args.host, args.port, args.share) == ("127.0.0.1", 7860, False)


@pytest.mark.parametrize("argv", [["--share"], ["--host", "0.0.0.0"], ["--share", "--auth", "nocolon"]])
def test_exposing_the_app_requires_auth(argv, capsys):
    with pytest.raises(SystemExit):
        parse_args(argv)
    assert "--auth" in capsys.readouterr().err


def test_exposing_with_auth_is_allowed():
    args = parse_args(["--host", "0.0.0.0", "--auth", "ann:secret"])
    assert args.auth == "ann:secret"


def test_import_then_export_round_trips_through_the_cli(tmp_path, capsys):
    source = tmp_path / "demos.jsonl"
    source.write_text(
        '{"instruction": "Say hi", "input": "", "output": "Hi!"}\n'
        '{"instruction": "Add", "input": "2 and 2", "output": "4"}\n'
    )
    workspace = str(tmp_path / "ws")
    assert main(["import", str(source), "--workspace", workspace]) == 0
    assert "Imported 2 demonstrations" in capsys.readouterr().out
    out = tmp_path / "out.jsonl"
    assert main(["export", "demonstrations", "--out", str(out), "--workspace", workspace]) == 0
    assert out.read_text().count('"messages"') == 2


def test_a_bad_import_exits_non_zero_and_names_the_line(tmp_path, capsys):
    source = tmp_path / "bad.jsonl"
    source.write_text(
        '{"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}\nnot json\n'
    )
    assert main(["import", str(source), "--workspace", str(tmp_path / "ws")]) == 2
    assert "line 2" in capsys.readouterr().err


def test_train_refuses_an_unknown_config_key(tmp_path, capsys):
    assert main(["train", "sft", "--workspace", str(tmp_path), "--set", "learning_rat=0.1"]) == 2
    assert "unknown key 'learning_rat'" in capsys.readouterr().err


def test_train_sft_headless_prints_where_the_adapter_is(tiny_model_dir, tmp_path, capsys):
    data = tmp_path / "d.jsonl"
    data.write_text('{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}\n')
    code = main(
        [
            "train",
            "sft",
            "--workspace",
            str(tmp_path / "ws"),
            "--data",
            str(data),
            "--set",
            f"model={tiny_model_dir}",
            "--set",
            "max_steps=2",
            "--set",
            "eval_fraction=0",
            "--set",
            "device=cpu",
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "Adapter saved in" in out and (tmp_path / "ws" / "runs").is_dir()


def test_preferences_import_and_export_through_the_cli(tmp_path, capsys):
    source = tmp_path / "prefs.jsonl"
    source.write_text('{"prompt": "Hi?", "chosen": "Hello!", "rejected": "Go away."}\n')
    workspace = str(tmp_path / "ws")
    assert main(["import", str(source), "--workspace", workspace]) == 0
    assert "Imported 1 comparisons (1 preference pairs)" in capsys.readouterr().out
    out = tmp_path / "out.jsonl"
    assert main(["export", "preferences", "--out", str(out), "--workspace", workspace]) == 0
    assert '"chosen": [{"role": "assistant", "content": "Hello!"}]' in out.read_text()
    assert main(["export", "preferences", "--out", str(out), "--workspace", workspace, "--negatives"]) == 2
    assert "No both-bad votes yet" in capsys.readouterr().err
