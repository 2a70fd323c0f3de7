"""Atomic writes leave the old file or folder, or the complete new one, and nothing beside them."""

import pytest

from audiodiff.utils.files import atomic_folder, atomic_open, write_json, write_text


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = write_text(tmp_path / "a.txt", "old")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half of the new")
        raise RuntimeError("crash while writing")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]
    write_json(target, {"b": 1, "a": "é"})
    assert target.read_text() == '{\n  "b": 1,\n  "a": "é"\n}\n'
    assert oct(target.stat().st_mode & 0o777) == "0o644"


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path):
    out = tmp_path / "export"
    with atomic_folder(out) as tmp:
        (tmp / "model.safetensors").write_text("v1")
        (tmp / "config.yaml").write_text("v1")
    with pytest.raises(RuntimeError), atomic_folder(out) as tmp:
        (tmp / "model.safetensors").write_text("v2")
        raise RuntimeError("crash before the config")
    assert {p.name: p.read_text() for p in out.iterdir()} == {"model.safetensors": "v1", "config.yaml": "v1"}
    with atomic_folder(out) as tmp:
        (tmp / "model.safetensors").write_text("v3")
    assert [p.name for p in out.iterdir()] == ["model.safetensors"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # no temporary or old folder left
