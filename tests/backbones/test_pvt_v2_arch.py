"""The one variant matcher (``pvt_v2.variant_for``) and the architectures read from Hugging Face configs and
from weight shapes (``pvt_v2_arch``): the variant and overrides always build the described network."""
import dataclasses

import pytest

from backbones import PVTv2Config, build_backbone
from backbones.pvt_v2 import MIT_VARIANTS, PVT_V2_VARIANTS, variant_for
from backbones.pvt_v2_arch import arch_from_state_dict, mit_from_hf_config, mit_from_state_dict, pvt_v2_from_hf_config

B2 = dict(hidden_sizes=[64, 128, 320, 512], depths=[3, 4, 6, 3])


@pytest.mark.parametrize(
    "arch, family, expected",
    [
        (dict(B2, linear_attention=True), None, ("pvt_v2_b2_li", {})),
        (dict(B2, mlp_ratios=(4, 4, 4, 4)), None, ("mit_b2", {})),  # the MLP ratios tell PVTv2 from MiT
        (dict(B2, mlp_ratios=(2, 2, 2, 2)), None, ("pvt_v2_b2", {"mlp_ratios": (2, 2, 2, 2)})),  # sizes + depths
        (dict(B2, depths=[1, 1, 1, 1]), None, ("pvt_v2_b1", {"depths": (1, 1, 1, 1)})),  # sizes + MLP ratios
        (dict(B2, depths=[1, 1, 1, 1]), MIT_VARIANTS, ("mit_b1", {"depths": (1, 1, 1, 1)})),
        (dict(hidden_sizes=[40, 80, 200, 320]), MIT_VARIANTS, ("mit_b0", {"hidden_sizes": (40, 80, 200, 320)})),  # none fits
    ],
)
def test_variant_for_picks_the_closest_variant_and_overrides_the_rest(arch, family, expected):
    name, overrides = variant_for(arch, family)
    assert (name, overrides) == expected
    variants = {**PVT_V2_VARIANTS, **MIT_VARIANTS}
    built = dataclasses.asdict(PVTv2Config(**{**variants[name], **overrides}))
    assert all(built[k] == (tuple(v) if isinstance(v, list) else v) for k, v in arch.items())


def test_hugging_face_configs_map_to_variants_with_their_layer_norm_eps():
    assert mit_from_hf_config({"hidden_sizes": [64, 128, 320, 512]}, "cfg") == (
        "mit_b1", {"drop_path_rate": 0.1, "layer_norm_eps": 1e-5, "embed_layer_norm_eps": 1e-5}
    )
    assert pvt_v2_from_hf_config(dict(B2, linear_attention=True), "cfg") == (
        "pvt_v2_b2_li", {"layer_norm_eps": 1e-6, "embed_layer_norm_eps": 1e-6}
    )
    for read in (mit_from_hf_config, pvt_v2_from_hf_config):
        with pytest.raises(ValueError, match="cfg: num_encoder_blocks=3 is not supported"):
            read({"num_encoder_blocks": 3}, "cfg")


def test_the_architecture_is_read_back_from_weight_shapes():
    model = build_backbone("mit_b0", depths=(1, 2, 1, 1), sr_ratios=(4, 2, 1, 1), num_channels=4)
    arch = arch_from_state_dict(model.state_dict())
    assert arch == dict(
        hidden_sizes=(32, 64, 160, 256), depths=(1, 2, 1, 1), mlp_ratios=(4, 4, 4, 4), linear_attention=False,
        sr_ratios=(4, 2, 1, 1), patch_sizes=(7, 3, 3, 3), num_channels=4,
    )
    assert mit_from_state_dict(model.state_dict()) == (
        "mit_b0", {"depths": (1, 2, 1, 1), "sr_ratios": (4, 2, 1, 1), "num_channels": 4}
    )
