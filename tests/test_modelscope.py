"""ModelScope text-to-video as a family: latent diffusion's eps objective, the SD 2 CLIP text
states (erf GELU, no attention mask), the student's guidance. (Training, resume and ZeRO-3:
test_unet_training.py; the UNet's layers: test_modelscope_unet.py; the full layouts: test_layouts.py.)"""
import numpy as np
from mindspore import Tensor

from conftest import compose


def test_objective_fields_and_the_students_guidance():
    from vgen.models.registry import build_family

    family = build_family(compose(["model=ms_tiny"]).model)
    np.testing.assert_allclose(family.objective.tables.betas, np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2,
                               rtol=1e-12)
    assert not family.objective.learn_sigma and family.text.drop_to == "empty" and family.fields == ("text_emb",)
    student = build_family(compose(["model=ms_turbo"]).model)
    assert student.fields == ("text_emb", "guidance")
    assert student.prepare({"text_emb": np.zeros((2, 77, 1024))})["guidance"].tolist() == [7.5, 7.5]


def test_sd2_clip_states_are_erf_gelu_blocks_without_a_padding_mask():
    """CLIPStatesEncoder: transformers' CLIPTextModel last_hidden_state with hidden_act gelu and
    no attention mask (causal only), written out in float64 numpy."""
    from math import erf

    from vgen.models.layers.init import declare_only, materialize, named_params
    from vgen.models.text.clip import build_states_encoder
    from vgen.runtime import setup_device

    setup_device("CPU")
    with declare_only():
        net = build_states_encoder("tiny", hidden_size=32, hidden_act="gelu")
    materialize(net, 0)
    p = {n: q.asnumpy().astype(np.float64) for n, q in named_params(net)}
    ids = np.array([[63, 5, 9, 62, 62, 62]], np.int32)
    got = net(Tensor(ids), Tensor(np.array([[1, 1, 1, 1, 0, 0]], np.int32))).asnumpy()  # the mask is not applied

    def ln(x, name):
        return (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5) * p[name + ".weight"] \
            + p[name + ".bias"]

    def lin(x, name):
        return x @ p[name + ".weight"].T + p[name + ".bias"]

    m = "text_model."
    x = p[m + "embeddings.token_embedding.weight"][ids[0]] + p[m + "embeddings.position_embedding.weight"][:6]
    causal = np.triu(np.full((6, 6), -np.inf), 1)
    for i in range(2):
        layer = f"{m}encoder.layers.{i}."
        h = ln(x, layer + "layer_norm1")
        q, k, v = (lin(h, layer + f"self_attn.{n}_proj").reshape(6, 4, 8).transpose(1, 0, 2) for n in "qkv")
        a = q @ k.transpose(0, 2, 1) / np.sqrt(8) + causal
        a = np.exp(a - a.max(-1, keepdims=True))
        a /= a.sum(-1, keepdims=True)
        x = x + lin((a @ v).transpose(1, 0, 2).reshape(6, 32), layer + "self_attn.out_proj")
        h = lin(ln(x, layer + "layer_norm2"), layer + "mlp.fc1")
        x = x + lin(0.5 * h * (1 + np.vectorize(erf)(h / np.sqrt(2))), layer + "mlp.fc2")
    np.testing.assert_allclose(got[0], ln(x, m + "final_layer_norm"), rtol=2e-4, atol=2e-4)
