"""Models by reference, and the hook adapter that gives a plain network the zoo's taps.

The adapter's taps are checked against tensors computed by hand from torchvision's own modules,
not against the adapter itself."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from kdbench.api.errors import ConfigError
from kdbench.api.tapped import TAP_NAMES
from kdbench.models import build_model
from kdbench.models.references import fingerprint
from torch import nn

from tests.extras import require
from tests.user_files import STUDENT_TAPS, write_student_module

SHAPE = (3, 32, 32)


def resnet18(num_classes: int = 5, in_channels: int = 3):
    torch.manual_seed(0)
    return build_model("torchvision:resnet18", num_classes, in_channels, 32)


def manual_resnet(net, x):
    """torchvision's ResNet forward, written out: the tensors each tap should hold."""
    x = net.maxpool(net.relu(net.bn1(net.conv1(x))))
    stages = []
    for layer in (net.layer1, net.layer2, net.layer3, net.layer4):
        x = layer(x)
        stages.append(x)
    pooled = torch.flatten(net.avgpool(x), 1)
    return stages, pooled, net.fc(pooled)


def test_torchvision_resnet_taps_are_its_own_tensors():
    model = resnet18().eval()
    assert model.gives == TAP_NAMES
    x = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        taps = model.forward_taps(x, preact=True)
        stages, pooled, logits = manual_resnet(model.net, x)
        last = model.net.layer4[1]  # the closing block: relu(bn2(conv2(relu(bn1(conv1(h))))) + h)
        h = model.net.layer4[0](model.net.layer3(model.net.layer2(model.net.layer1(
            model.net.maxpool(model.net.relu(model.net.bn1(model.net.conv1(x))))))))
        pre = last.bn2(last.conv2(F.relu(last.bn1(last.conv1(h))))) + h
    for got, want in zip(taps.stages, stages):
        torch.testing.assert_close(got, want)
    torch.testing.assert_close(taps.prepool, stages[-1])
    torch.testing.assert_close(taps.pooled, pooled)
    torch.testing.assert_close(taps.logits, logits)
    torch.testing.assert_close(taps.preact_stages[3], pre)
    assert (pre < 0).any() and torch.equal(taps.stages[3], pre.relu())
    assert sorted(taps.blocks) == [f"stage{g}.block{j}" for g in range(4) for j in range(2)]


def test_first_convolution_and_classifier_fit_the_data():
    model = resnet18(num_classes=7, in_channels=1)
    assert model.net.conv1.in_channels == 1 and model.net.conv1.stride == (2, 2)
    assert model.tap_shapes((1, 32, 32)).logits == (7,)


def test_injection_and_a_replaced_classifier_act_downstream():
    model = resnet18().eval()
    model.inject("stage3", ZeroMap())  # everything after stage 3 sees zeros...
    model.inject("prepool", nn.Conv2d(512, 512, 1))  # ...so the pooled feature is this layer's bias
    model.classifier = nn.Linear(512, 3)
    assert model.net.fc is model.classifier
    with torch.no_grad():
        taps = model.forward_taps(torch.randn(2, *SHAPE))
        want = model.classifier(model.injections["prepool"].bias.expand(2, 512))
    torch.testing.assert_close(taps.pooled, model.injections["prepool"].bias.expand(2, 512))
    torch.testing.assert_close(taps.logits, want)
    assert "injections.prepool.weight" in model.state_dict()  # trained and saved with the student


class ZeroMap(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


def test_families_found_without_declaring_taps():
    vgg = build_model("torchvision:vgg11", 5, 3, 32)
    assert vgg.gives == TAP_NAMES - {"prepool"}  # it pools to 7×7 and runs an MLP: no GAP'd map
    assert vgg.tap_shapes(SHAPE).pooled == (4096,)
    mobile = build_model("torchvision:mobilenet_v2", 5, 3, 32)
    shapes = mobile.tap_shapes(SHAPE)
    assert mobile.gives == TAP_NAMES and shapes.prepool == (1280, 1, 1)
    assert [s[1] for s in shapes.stages] == [16, 8, 4, 2, 1]  # one stage per resolution


def test_a_plain_module_gives_logits_and_pooled_until_taps_are_declared(tmp_path):
    ref = write_student_module(tmp_path)
    bare = build_model(ref, 5, 3, 32, search=tmp_path)
    assert bare.gives == {"logits", "pooled"}
    declared = build_model(ref, 5, 3, 32, taps=STUDENT_TAPS, search=tmp_path)
    assert declared.gives == TAP_NAMES
    assert [s[1] for s in declared.tap_shapes(SHAPE).stages] == [8, 4, 2, 1]
    assert declared.tap_shapes(SHAPE).blocks_per_stage == (2, 2, 2, 2)


@pytest.mark.parametrize("taps, message", [
    ({"stages": ["9"]}, "has no module '9'"),
    ({"classifier": "6"}, "is a Flatten, not an nn.Linear"),
    ({"prepool": "3"}, "is not a map whose spatial mean is the classifier's input"),
    ({"stages": ["6"]}, "is not a map"),
    ({"stage": ["1"]}, "unknown taps key(s) stage"),
])
def test_declared_taps_are_checked(tmp_path, taps, message):
    ref = write_student_module(tmp_path)
    with pytest.raises(ConfigError, match="^" + ref + ".*" + message.replace("(", r"\(").replace(")", r"\)")):
        build_model(ref, 5, 3, 32, taps=taps, search=tmp_path)


@pytest.mark.parametrize("ref, message", [
    ("torchvision:resnet19", "unknown torchvision model 'resnet19'; did you mean resnet18"),
    ("no_such_pkg.models:net", "module 'no_such_pkg.models' does not import"),
    ("my_models:nothing", "module 'my_models' has no 'nothing'"),
    ("my_models:unit", "calling it with num_classes=5, in_channels=3 failed"),
    ("my_models:nn", "is not callable"),
    ("mystery_net", "unknown model 'mystery_net'"),
])
def test_bad_references_are_one_line(tmp_path, ref, message):
    write_student_module(tmp_path)
    with pytest.raises(ConfigError, match=message) as err:
        build_model(ref, 5, 3, 32, search=tmp_path)
    assert "\n" not in str(err.value)


def test_a_network_too_deep_for_the_images_is_refused():
    with pytest.raises(ConfigError, match=r"torchvision:vgg11 cannot run on 3×8×8 inputs"):
        build_model("torchvision:vgg11", 5, 3, 8)


def test_timm_without_the_extra_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # what an interpreter without timm sees
    with pytest.raises(ConfigError, match=r"needs timm, which is not installed: pip install 'kdbench\[models\]'"):
        build_model("timm:resnet18", 5, 3, 32)


def test_timm_models_are_adapted():
    require("timm", "models")
    model = build_model("timm:resnet10t", 5, 3, 32)
    assert model.gives == TAP_NAMES and model.paths.classifier == "fc"
    with pytest.raises(ConfigError, match="unknown timm model 'resnet10x'"):
        build_model("timm:resnet10x", 5, 3, 32)


def test_the_code_behind_a_callable_is_fingerprinted(tmp_path):
    ref = write_student_module(tmp_path, "fp_models")
    before = fingerprint(ref, tmp_path)
    assert fingerprint("torchvision:resnet18") is None and len(before) == 64
    (tmp_path / "fp_models.py").write_text((tmp_path / "fp_models.py").read_text() + "\n# edited\n")
    sys.modules.pop("fp_models")
    assert fingerprint(ref, tmp_path) != before


def test_entry_point_models_are_found(tmp_path, monkeypatch):
    """A package registering a model the way an installed one does: a dist-info on the path."""
    write_student_module(tmp_path, "acme_models")
    info = tmp_path / "acme_models-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: acme-models\nVersion: 1.2\n")
    (info / "entry_points.txt").write_text("[kdbench.models]\nacme_tiny = acme_models:tiny_cnn\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    model = build_model("acme_tiny", 4, 1, 32, taps={"stages": ["1", "2"], "classifier": "7"})
    assert model.gives == TAP_NAMES - {"prepool"} and model.tap_shapes((1, 32, 32)).logits == (4,)
    assert fingerprint("acme_tiny") == "acme-models==1.2"
