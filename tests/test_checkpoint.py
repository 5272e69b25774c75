"""Checkpoint directories: safetensors + JSON, atomic, validated on load, never pickled."""

from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")

from spatialclust import __version__  # noqa: E402
from spatialclust.models._checkpoint import (  # noqa: E402
    CONFIG_FILE,
    MODEL_FILE,
    OPTIMIZER_FILE,
    CheckpointError,
    is_checkpoint,
    load_checkpoint,
    load_optimizer_state,
    save_checkpoint,
)

CONFIG = {
    "architecture": {"backbone": "test_tiny", "projection_dim": 8, "hidden": (16, 8)},
    "preprocessing": {"input_size": 32, "mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5)},
}


def _trained_model_and_optimizer():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.ReLU(), torch.nn.Linear(3, 2))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    for _ in range(2):
        optimizer.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        optimizer.step()
    return model, optimizer


def test_roundtrip_weights_config_and_optimizer(tmp_path):
    model, optimizer = _trained_model_and_optimizer()
    path = save_checkpoint(
        tmp_path / "ckpt", model.state_dict(), CONFIG, kind="simclr",
        optimizer_state=optimizer.state_dict(), training={"epoch": 2, "losses": [1.5, 1.2]},
    )
    assert is_checkpoint(path)
    assert {p.name for p in path.iterdir()} == {MODEL_FILE, OPTIMIZER_FILE, CONFIG_FILE}
    state, config = load_checkpoint(path, kind="simclr", expected={"architecture": CONFIG["architecture"]})
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(state[name], tensor)
    assert config["kind"] == "simclr"
    assert config["spatialclust_version"] == __version__
    assert config["training"] == {"epoch": 2, "losses": [1.5, 1.2]}
    assert config["preprocessing"]["mean"] == [0.5, 0.5, 0.5]

    # the optimizer resumes exactly where it was
    model2, optimizer2 = _trained_model_and_optimizer()
    optimizer2.load_state_dict(load_optimizer_state(path, config))
    for group, group2 in zip(optimizer.state_dict()["state"].values(), optimizer2.state_dict()["state"].values()):
        for key in group:
            torch.testing.assert_close(torch.as_tensor(group[key]), torch.as_tensor(group2[key]))


def test_wrong_kind_and_architecture_are_named(tmp_path):
    model, _ = _trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "ckpt", model.state_dict(), CONFIG, kind="simclr")
    with pytest.raises(CheckpointError, match="holds a 'simclr' model, expected a 'dino' model"):
        load_checkpoint(path, kind="dino")
    with pytest.raises(CheckpointError, match=r"`architecture\.backbone` \(expected 'efficientnet_lite0', checkpoint has 'test_tiny'\)"):
        load_checkpoint(path, kind="simclr", expected={"architecture": {"backbone": "efficientnet_lite0"}})
    with pytest.raises(CheckpointError, match="holds no optimizer state"):
        load_optimizer_state(path)


def test_incompatible_version(tmp_path):
    model, _ = _trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "ckpt", model.state_dict(), CONFIG, kind="simclr")
    document = json.loads((path / CONFIG_FILE).read_text())
    document["spatialclust_version"] = "99.3.0"
    (path / CONFIG_FILE).write_text(json.dumps(document))
    with pytest.raises(CheckpointError, match="spatialclust 99.3.0, which is incompatible"):
        load_checkpoint(path, kind="simclr")


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint(tmp_path / "nothing", kind="simclr")
    model, _ = _trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "ckpt", model.state_dict(), CONFIG, kind="simclr")
    (path / MODEL_FILE).write_bytes(b"\x00garbage")
    with pytest.raises(CheckpointError, match="corrupt or not a safetensors file"):
        load_checkpoint(path, kind="simclr")
    (path / MODEL_FILE).unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        load_checkpoint(path, kind="simclr")
    (path / CONFIG_FILE).write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_checkpoint(path, kind="simclr")


def test_failed_save_leaves_previous_checkpoint(tmp_path):
    model, _ = _trained_model_and_optimizer()
    path = save_checkpoint(tmp_path / "ckpt", model.state_dict(), CONFIG, kind="simclr", training={"epoch": 1})
    with pytest.raises(TypeError):
        save_checkpoint(path, model.state_dict(), {"architecture": {"bad": object()}}, kind="simclr")
    _, config = load_checkpoint(path, kind="simclr")
    assert config["training"]["epoch"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]


def test_reserved_keys_rejected(tmp_path):
    with pytest.raises(ValueError, match="reserved keys"):
        save_checkpoint(tmp_path / "c", {}, {"kind": "x"}, kind="simclr")
