"""Every entry point speaks one command-line style (audiodiff.cli): `--help` exits 0 with the settings, and a user
error prints one `error:` line naming the problem and exits 1, with no traceback unless `--debug`."""

import subprocess
import sys
from pathlib import Path

import pytest

from audiodiff import cli, convert, evaluate, export, generate, prepare, serve, train

FIXTURE_MODEL = Path(__file__).parent / "fixtures" / "export_v0_1" / "model"
# (module, conf name, task): every entry point built on the runner.
TOOLS = {
    "audiodiff.train": ("train", train.train),
    "audiodiff.generate": ("generate", generate.main),
    "audiodiff.evaluate": ("evaluate", evaluate.main),
    "audiodiff.export": ("export", export.main),
    "audiodiff.serve": ("serve", serve.main),
    "audiodiff.prepare": ("prepare", prepare.main),
    "audiodiff.convert": ("convert", convert.main),
}


def run(tool: str, *argv: str) -> int:
    config_name, task = TOOLS[tool]
    return cli.run(tool, config_name, task, "doc of " + tool, list(argv))


def one_error(capsys, *fragments: str) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_help_prints_the_settings_and_exits_0(tool, capsys):
    assert run(tool, "--help") == 0
    out = capsys.readouterr().out
    assert f"usage: python -m {tool} [key=value ...]" in out
    assert "Settings (conf/" in out


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_an_unknown_setting_is_one_error_line(tool, capsys):
    assert run(tool, "no_such_setting=1") == 1
    one_error(capsys, "no_such_setting")


@pytest.mark.parametrize("tool", sorted(TOOLS))
def test_an_argument_that_is_not_key_value_is_refused(tool, capsys):
    assert run(tool, "--bogus") == 1
    one_error(capsys, "--bogus")


def test_help_as_a_module_exits_0():
    done = subprocess.run([sys.executable, "-m", "audiodiff.export", "--help"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "run: null" in done.stdout


def test_a_missing_model_is_named(capsys):
    assert run("audiodiff.generate", "model=/nonexistent/model", "prompt=beeps") == 1
    one_error(capsys, "/nonexistent/model", "no such model")
    assert run("audiodiff.serve", "model=/nonexistent/model") == 1
    one_error(capsys, "/nonexistent/model")
    assert run("audiodiff.export", "run=/nonexistent/run") == 1
    one_error(capsys, "/nonexistent/run")


def test_a_recipe_whose_run_does_not_exist_says_how_to_train_it(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert run("audiodiff.generate", "recipe=sfx_quick", "prompt=beeps") == 1
    one_error(capsys, "runs/sfx_quick/seed0/export", "python -m audiodiff.train recipe=sfx_quick")


def test_an_unknown_recipe_lists_the_recipes(capsys):
    for tool in ("audiodiff.train", "audiodiff.evaluate", "audiodiff.generate"):
        assert run(tool, "recipe=nope") == 1
        one_error(capsys, "recipe=nope", "sfx_quick")


def test_a_tool_without_recipes_refuses_one(capsys):
    assert run("audiodiff.prepare", "corpus=sfx", "recipe=sfx_quick") == 1
    one_error(capsys, "takes no recipe=")


def test_a_bad_override_value_is_named(capsys):
    assert run("audiodiff.generate", f"model={FIXTURE_MODEL}", "prompt=beeps", "steps=abc") == 1
    one_error(capsys, "steps", "'abc'")
    assert run("audiodiff.generate", f"model={FIXTURE_MODEL}", "prompt=beeps", "sampler=nope") == 1
    one_error(capsys, "sampler/nope")
    assert run("audiodiff.generate", "prompt=[a") == 1
    one_error(capsys, "[a")


def test_a_required_setting_left_unset_is_named(capsys):
    assert run("audiodiff.prepare") == 1
    one_error(capsys, "corpus=...")


def test_a_bad_prompts_file_names_file_and_line(capsys, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text('{"prompt": "a beep"}\n{"prompt": 3}\n')
    assert run("audiodiff.generate", f"model={FIXTURE_MODEL}", f"prompts={prompts}") == 1
    one_error(capsys, f"{prompts}:2", "prompt")
    latin = tmp_path / "prompts.txt"
    latin.write_bytes("un bip aigu, très fort\n".encode("latin-1"))
    assert run("audiodiff.generate", f"model={FIXTURE_MODEL}", f"prompts={latin}") == 1
    one_error(capsys, str(latin), "not UTF-8")


def test_a_malformed_manifest_stops_training_with_one_line(capsys, tmp_path):
    manifest = tmp_path / "manifest.jsonl"
    manifest.write_text('{"audio": "a.wav", "caption": "a beep"\n')
    argv = ["recipe=debug", "data=manifest", f"data.manifest={manifest}", f"run_dir={tmp_path / 'run'}"]
    assert run("audiodiff.train", *argv) == 1
    one_error(capsys, str(manifest))
    manifest.write_bytes(b'{"audio": "a.wav", "caption": "\xff\xfe"}\n')
    assert run("audiodiff.train", *argv) == 1
    one_error(capsys, str(manifest))


def test_debug_shows_the_traceback():
    with pytest.raises(FileNotFoundError):
        run("audiodiff.export", "run=/nonexistent/run", "--debug")
