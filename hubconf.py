"""torch.hub entry points of mobilenets: one factory per model of ``mobilenets.list_models()``.

    torch.hub.list("path/or/owner/repo")
    print(torch.hub.help("path/or/owner/repo", "mobilenet_v3_small"))
    model = torch.hub.load("path/or/owner/repo", "mobilenet_v3_small", pretrained=True)

Every factory takes ``pretrained=False`` and the keyword arguments of ``mobilenets.create_model``.
Only the factories are public names here: ``torch.hub.list`` lists every public callable of this module.
"""

# What pretrained=True needs beyond torch: safetensors and numpy (writing the converted cache), tqdm (the download
# progress bar), filelock (one writer per cache entry).
dependencies = ["torch", "safetensors", "numpy", "tqdm", "filelock"]

from mobilenets.hub import (  # noqa: E402, F401
    efficientnet_b0,
    efficientnet_b1,
    efficientnet_b2,
    efficientnet_b3,
    efficientnet_b4,
    efficientnet_b5,
    efficientnet_b6,
    efficientnet_b7,
    efficientnet_b8,
    efficientnet_lite0,
    efficientnet_lite1,
    efficientnet_lite2,
    efficientnet_lite3,
    efficientnet_lite4,
    efficientnet_v2_b0,
    efficientnet_v2_b1,
    efficientnet_v2_b2,
    efficientnet_v2_b3,
    efficientnet_v2_l,
    efficientnet_v2_m,
    efficientnet_v2_s,
    efficientnet_v2_xl,
    mobilenet_v1,
    mobilenet_v1_025,
    mobilenet_v1_050,
    mobilenet_v1_075,
    mobilenet_v1_125,
    mobilenet_v2,
    mobilenet_v2_035,
    mobilenet_v2_050,
    mobilenet_v2_075,
    mobilenet_v2_110d,
    mobilenet_v2_120d,
    mobilenet_v2_130,
    mobilenet_v2_140,
    mobilenet_v3_large,
    mobilenet_v3_large_050,
    mobilenet_v3_large_075,
    mobilenet_v3_large_150d,
    mobilenet_v3_large_minimal,
    mobilenet_v3_small,
    mobilenet_v3_small_050,
    mobilenet_v3_small_075,
    mobilenet_v3_small_minimal,
    mobilenet_v4_conv_aa_large,
    mobilenet_v4_conv_aa_medium,
    mobilenet_v4_conv_blur_medium,
    mobilenet_v4_conv_large,
    mobilenet_v4_conv_medium,
    mobilenet_v4_conv_small,
    mobilenet_v4_conv_small_035,
    mobilenet_v4_conv_small_050,
    mobilenet_v4_hybrid_large,
    mobilenet_v4_hybrid_large_075,
    mobilenet_v4_hybrid_medium,
    mobilenet_v4_hybrid_medium_075,
)
