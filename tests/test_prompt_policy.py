"""The prompt policy: words, patterns and named rules refuse prompts in the pipeline, the generate command (a
prompts file names the line), and the web page, before any work; off by default."""

import json
from pathlib import Path

import pytest
from debug_model import debug_export

from audiodiff.config import compose_config
from audiodiff.generate import read_prompts, run
from audiodiff.pipeline import AudioDiffusionPipeline
from audiodiff.pipeline.policy import PromptPolicy, PromptRefused
from audiodiff.web.server import BadRequest, Studio

POLICY = """
rules:
  - name: weapons
    words: [gunshot, assault rifle]
    patterns: ['\\bshoot(s|ing)?\\b']
words: [scream]
"""


@pytest.fixture()
def policy_file(tmp_path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


def test_words_are_whole_words_in_any_case_and_patterns_are_searched(policy_file):
    policy = PromptPolicy.from_file(policy_file)
    assert policy.violation("a GUNSHOT echoes") == 'rule "weapons" (word "gunshot")'
    assert policy.violation("an Assault   Rifle fires") == 'rule "weapons" (word "assault rifle")'
    assert policy.violation("someone shooting hoops") == 'rule "weapons" (pattern "\\bshoot(s|ing)?\\b")'
    assert policy.violation("a long scream") == 'word "scream"'
    assert policy.violation("gunshots") is None  # whole words only: "gunshots" is another word
    assert policy.violation("screaming kettle") is None
    assert policy.violation("rain on a roof") is None
    with pytest.raises(PromptRefused, match=f'prompt: refused by the prompt policy of {policy_file}: '
                                            f'rule "weapons" \\(word "gunshot"\\)'):
        policy.check("gunshot")


def test_a_classifier_hook_refuses_with_its_reason():
    policy = PromptPolicy.from_lists(words=["siren"], classifier=lambda p: "too loud" if "loud" in p else None)
    assert policy.violation("a loud bang") == 'rule "classifier" (too loud)'
    assert policy.violation("a siren") == 'word "siren"' and policy.violation("a soft bang") is None


@pytest.mark.parametrize("text, message", [
    ("words: gunshot", "words: expected a list of non-empty texts, got 'gunshot'"),
    ("patterns: ['(unclosed']", "pattern '(unclosed' is not a valid regular expression"),
    ("colours: [red]", "unknown key(s) ['colours']"),
    ("rules: [{words: [a]}]", "rules[0]: expected a mapping with a non-empty 'name'"),
    ("rules: [{name: x, word: [a]}]", "rules[0]: unknown key(s) ['word']"),
    ("[a, b]", "expected a mapping with 'rules', 'words' or 'patterns', got list"),
    ("words: [a", "not valid YAML"),
])
def test_bad_policy_files_are_named(tmp_path, text, message):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=message.replace("(", "\\(").replace(")", "\\)").replace("[", "\\[")
                       .replace("]", "\\]")):
        PromptPolicy.from_file(path)
    other = tmp_path / "p.txt"
    other.write_text("words: [a]")
    with pytest.raises(ValueError, match="expected a .json, .yaml or .yml policy file"):
        PromptPolicy.from_file(other)


def test_json_policies_load_too(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"words": ["scream"]}))
    assert PromptPolicy.from_file(path).violation("a scream") == 'word "scream"'


def test_a_prompts_file_names_the_refused_line(policy_file, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("rain on a roof\n# a comment\n\na gunshot in a hall\n")
    policy = PromptPolicy.from_file(policy_file)
    with pytest.raises(PromptRefused, match=f'{prompts}:4: refused by the prompt policy of {policy_file}: '
                                            f'rule "weapons"'):
        read_prompts(prompts, policy)
    rows = tmp_path / "prompts.jsonl"
    rows.write_text('{"prompt": "wind"}\n{"prompt": "a scream", "seed": 2}\n')
    with pytest.raises(PromptRefused, match=f'{rows}:2: .*word "scream"'):
        read_prompts(rows, policy)
    assert read_prompts(prompts) == [{"prompt": "rain on a roof"}, {"prompt": "a gunshot in a hall"}]  # off


@pytest.fixture(scope="module")
def export(tmp_path_factory) -> Path:
    return debug_export(tmp_path_factory.mktemp("model") / "export")


def test_the_pipeline_and_the_page_refuse_before_any_work(export, policy_file):
    pipe = AudioDiffusionPipeline.from_pretrained(export, watermark=False)
    assert pipe.prompt_policy is None  # off by default
    pipe("a gunshot", duration=0.25, steps=1)
    pipe.prompt_policy = PromptPolicy.from_file(policy_file)
    calls = []
    pipe.model.generate = lambda *a, **k: calls.append(1)  # nothing may be generated
    with pytest.raises(PromptRefused, match="prompt 'rain, then a gunshot': refused by the prompt policy"):
        pipe(["wind", "rain, then a gunshot"], duration=0.25, steps=1)
    with pytest.raises(BadRequest, match='refused by the prompt policy .*rule "weapons" \\(pattern'):
        Studio(pipe).generate({"prompt": "he shoots", "duration": 0.25, "steps": 1})
    assert not calls


def test_the_generate_command_refuses_and_writes_nothing(export, policy_file, tmp_path):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("wind\na scream\n")
    out = tmp_path / "out"
    cfg = compose_config("generate", [f"model={export}", f"prompts={prompts}", f"prompt_policy={policy_file}",
                                      "steps=1", "duration=0.25", f"out={out}"])
    with pytest.raises(PromptRefused, match=f"{prompts}:2: refused by the prompt policy"):
        run(cfg)
    cfg = compose_config("generate", [f"model={export}", "prompt=an assault rifle", f"prompt_policy={policy_file}",
                                      "steps=1", "duration=0.25", f"out={out}"])
    with pytest.raises(PromptRefused, match='rule "weapons" \\(word "assault rifle"\\)'):
        run(cfg)
    assert not out.exists()
    cfg = compose_config("generate", [f"model={export}", "prompt=an assault rifle", "steps=1", "duration=0.25",
                                      f"out={out}", "watermark=false"])
    assert [p.name for p in run(cfg)] == ["an_assault_rifle_seed0.wav"]  # no policy: allowed
