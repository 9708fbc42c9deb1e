"""The four ImageNet families on GTSRB: shapes, feature layers, depth, the pooling change."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from localprops.models import gtsrb_families, gtsrb_nets


@pytest.fixture(scope="module", params=sorted(gtsrb_families.FAMILIES))
def family(request):
    torch.manual_seed(0)
    return request.param, gtsrb_nets.build(request.param).eval()


def test_registered_and_logits_for_32x32_images(family):
    name, net = family
    assert gtsrb_nets.ARCHITECTURES[name] is gtsrb_families.FAMILIES[name]
    with torch.no_grad():
        assert net(torch.randn(2, 3, 32, 32)).shape == (2, 43)


def test_feature_layer_is_the_one_before_the_classifier(family):
    name, net = family
    modules = dict(net.named_modules())
    seen = []
    handle = modules[net.FEATURE_LAYER].register_forward_hook(
        lambda m, a, out: seen.append(out.flatten(1)))
    try:
        with torch.no_grad():
            logits = net(torch.randn(2, 3, 32, 32))
    finally:
        handle.remove()
    classifier = [m for m in net.modules() if isinstance(m, nn.Linear)][-1]
    # the final linear layer maps exactly the captured features to the logits
    torch.testing.assert_close(classifier(seen[0]), logits)


def count_weighted(module: nn.Module, skip: tuple[str, ...] = ()) -> int:
    return sum(isinstance(m, (nn.Conv2d, nn.Linear)) for n, m in module.named_modules()
               if not any(s in n for s in skip))


def test_depth_of_the_sequential_families():
    assert count_weighted(gtsrb_nets.build("gtsrb-alexnet")) == 8
    assert count_weighted(gtsrb_nets.build("gtsrb-vgg11bn")) == 11
    # ResNet-18: 17 convolutions on the main path (not the 1x1 shortcuts) + 1 FC
    assert count_weighted(gtsrb_nets.build("gtsrb-resnet18"), skip=("downsample",)) == 18
    for name, cls in gtsrb_families.FAMILIES.items():
        assert cls.DEPTH > 0, name


@pytest.mark.parametrize("factory, size, side", [
    (torchvision.models.alexnet, 64, 1),
    (torchvision.models.alexnet, gtsrb_families.ALEXNET_SIZE, gtsrb_families.ALEXNET_MAP),
    (torchvision.models.vgg11_bn, gtsrb_families.VGG_SIZE, gtsrb_families.VGG_MAP)])
def test_last_feature_map_is_what_the_pool_change_assumes(factory, size, side):
    """AlexNet's map is 1x1 at 64x64 (hence its larger input); VGG's 1x1 at 32x32."""
    features = factory(weights=None).features.eval()
    with torch.no_grad():
        out = features(torch.randn(1, 3, size, size))
    assert out.shape[-2:] == (side, side)


def test_each_family_upsamples_to_its_stated_side(family):
    name, net = family
    expected = {"gtsrb-alexnet": gtsrb_families.ALEXNET_SIZE,
                "gtsrb-vgg11bn": gtsrb_families.VGG_SIZE}.get(name, gtsrb_families.FAMILY_SIZE)
    assert net.upsample.size == (expected, expected)


def test_vgg_sees_the_image_itself():
    """At VGG's side (32) the fixed upsampling is exactly the identity."""
    net = gtsrb_nets.build("gtsrb-vgg11bn")
    x = torch.rand(2, 3, 32, 32) * 255
    assert torch.equal(net.upsample(x), x)


def test_vgg_pool_change_keeps_the_function_class():
    """An FC over the 7x7 pool's 49 copies of the 1x1 map is an FC over the map."""
    torch.manual_seed(2)
    z = torch.randn(4, 512, 1, 1)
    wide = nn.Linear(512 * 49, 5)
    narrow = nn.Linear(512, 5)
    with torch.no_grad():
        narrow.weight.copy_(wide.weight.reshape(5, 512, 49).sum(dim=2))
        narrow.bias.copy_(wide.bias)
    copies = nn.AdaptiveAvgPool2d((7, 7))(z).flatten(1)
    torch.testing.assert_close(wide(copies), narrow(z.flatten(1)), rtol=1e-4, atol=1e-4)


def test_alexnet_pool_change_keeps_the_function_class():
    """An FC over the 6x6 pool's copies of the 3x3 map is an FC over the map (summed weights)."""
    torch.manual_seed(1)
    side = gtsrb_families.ALEXNET_MAP
    assert 6 % side == 0
    copy = 6 // side
    z = torch.randn(4, 256, side, side)
    wide = nn.Linear(256 * 36, 7)
    copies = nn.AdaptiveAvgPool2d((6, 6))(z).flatten(1)
    narrow = nn.Linear(256 * side * side, 7)
    with torch.no_grad():
        blocks = wide.weight.reshape(7, 256, side, copy, side, copy).sum(dim=(3, 5))
        narrow.weight.copy_(blocks.reshape(7, 256 * side * side))
        narrow.bias.copy_(wide.bias)
    torch.testing.assert_close(wide(copies), narrow(z.flatten(1)), rtol=1e-4, atol=1e-4)
    kept = nn.AdaptiveAvgPool2d((side, side))(z)     # the pool the net uses: the identity
    torch.testing.assert_close(kept, z)
