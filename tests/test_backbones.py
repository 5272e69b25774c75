"""Backbone registry: configs, preprocessing, weight loading and its errors, real EfficientNet-Lite0 weights."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest
import torch

from spatialclust.models import Backbone, BackboneConfig, WeightsError, create_backbone, list_backbones
from spatialclust.models import efficientnet_lite0_state_dict


def test_registry_lists_every_backbone():
    assert {"efficientnet_lite0", "xception", "efficientnet_b0", "resnet50", "dino_vits16", "test_tiny"} <= set(
        list_backbones()
    )


def test_unknown_backbone_lists_valid_names():
    with pytest.raises(ValueError, match=r"Invalid option `vgg_nonexistent` for `backbone`.*`efficientnet_lite0`"):
        create_backbone("vgg_nonexistent")


@pytest.mark.parametrize(
    ("name", "num_features", "min_size", "input_size", "mean"),
    [("xception", 2048, 71, 299, 0.5), ("efficientnet_lite0", 1280, 32, 224, 0.5), ("dino_vits16", 384, 16, 224, 0.485)],
)
def test_configs_carry_the_preprocessing(name, num_features, min_size, input_size, mean):
    with torch.device("meta"):  # architecture and config only, no weights allocated
        backbone = create_backbone(name, random_init=True)
    cfg = backbone.config
    assert (cfg.num_features, cfg.min_size, cfg.input_size, cfg.mean[0]) == (num_features, min_size, input_size, mean)
    assert cfg.fixed_input_size == (name == "dino_vits16")


def test_tiny_backbone_is_a_trainable_feature_extractor():
    backbone = create_backbone("test_tiny")
    assert isinstance(backbone, Backbone) and isinstance(backbone.config, BackboneConfig)
    assert repr(backbone) == "Backbone('test_tiny', num_features=16)"
    # deterministic random init (a test model) from `seed`
    torch.testing.assert_close(create_backbone("test_tiny").state_dict(), backbone.state_dict())
    x = backbone.preprocess(np.random.default_rng(0).random((4, 20, 24)))
    assert x.shape == (4, 3, 32, 32)
    out = backbone(x)
    assert out.shape == (4, backbone.config.num_features)
    out.sum().backward()  # nothing frozen inside: SimCLR fine-tunes it
    assert all(p.grad is not None for p in backbone.parameters())


def test_preprocess_replicates_gray_and_normalises():
    backbone = create_backbone("test_tiny")  # mean = std = 0.5
    images = np.zeros((2, 16, 16), np.float32)
    images[1] = 1.0
    x = backbone.preprocess(images, size=16)
    assert x.shape == (2, 3, 16, 16)
    assert torch.all(x[0] == -1.0) and torch.all(x[1] == 1.0)
    resized = backbone.preprocess(images)  # default: the backbone's input size
    assert resized.shape[-1] == backbone.config.input_size
    with pytest.raises(ValueError, match="below the minimum input size 8"):
        backbone.preprocess(images, size=4)
    with pytest.raises(ValueError, match="must have shape"):
        backbone.preprocess(images[0])


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_local_weights_round_trip(tmp_path, suffix):
    source = create_backbone("test_tiny", seed=1)
    path = tmp_path / f"tiny{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(source.model.state_dict(), str(path))
    else:
        torch.save({"state_dict": source.model.state_dict()}, path)
    loaded = create_backbone("test_tiny", weights=path)
    torch.testing.assert_close(loaded.state_dict(), source.state_dict())
    assert not torch.equal(create_backbone("test_tiny").model.features[0].weight, loaded.model.features[0].weight)


def test_weights_of_wrong_architecture_name_the_keys(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "tiny8.safetensors"
    save_file(create_backbone("test_tiny", num_features=8).model.state_dict(), str(path))
    with pytest.raises(WeightsError, match=r"shape mismatches: features\.6\.weight \(file \(8, 16, 3, 3\), model \(16, 16, 3, 3\)\)"):
        create_backbone("test_tiny", weights=path)
    with pytest.raises(WeightsError, match=r"missing keys: conv_stem\.weight.*unexpected keys: features\.0\.bias, features\.0\.weight"):
        create_backbone("efficientnet_b0", weights=path)


def test_missing_weight_file_says_how_to_supply_weights(tmp_path):
    with pytest.raises(WeightsError, match=r"does not exist.*weights=PATH"):
        create_backbone("resnet50", weights=tmp_path / "nope.safetensors")


class Payload:
    """An arbitrary pickled object: loading it would run code from the file."""


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "extra": Payload()}, path)
    with pytest.raises(WeightsError, match="weights_only=True"):
        create_backbone("test_tiny", weights=path)


def test_no_hub_access_gives_an_actionable_error():
    # conftest sets HF_HUB_OFFLINE=1: the hub request fails at once
    start = time.perf_counter()
    with pytest.raises(WeightsError, match=r"could not download pretrained weights.*weights=PATH"):
        create_backbone("efficientnet_b0", pretrained=True)
    assert time.perf_counter() - start < 20


def test_random_init_only_when_asked_and_logged(caplog):
    with pytest.raises(WeightsError, match="no weights requested"):
        create_backbone("resnet50", pretrained=False)
    with pytest.raises(ValueError, match="either `weights` or `random_init=True`"):
        create_backbone("resnet50", weights="x.safetensors", random_init=True)
    with caplog.at_level(logging.WARNING, logger="spatialclust"):
        create_backbone("efficientnet_b0", random_init=True)
    assert "RANDOM initialisation" in caplog.text


def test_efficientnet_lite0_packaged_weights_classify_a_natural_image():
    """The packaged weights, converted to timm's tf_efficientnet_lite0, recognise Grace Hopper's uniform."""
    from matplotlib import cbook
    from PIL import Image
    from timm.data import ImageNetInfo

    backbone = create_backbone("efficientnet_lite0").eval()
    classifier = efficientnet_lite0_state_dict()
    cfg = backbone.config
    with Image.open(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)) as img:
        rgb = np.asarray(img.convert("RGB").resize((cfg.input_size, cfg.input_size), Image.BICUBIC), np.float32) / 255
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None]
    x = (x - torch.tensor(cfg.mean).view(1, 3, 1, 1)) / torch.tensor(cfg.std).view(1, 3, 1, 1)
    with torch.inference_mode():
        logits = backbone(x) @ classifier["classifier.weight"].T + classifier["classifier.bias"]
    top5 = [ImageNetInfo().index_to_description(i) for i in logits[0].topk(5).indices.tolist()]
    assert top5[0] == "military uniform", top5
