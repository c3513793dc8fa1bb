"""DeployModel exports to ONNX with matching ONNX Runtime outputs; checkpoints round-trip."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from fixtures_networks import random_images, tiny_mono_config, tiny_stereo_config

from mtl_perception.errors import UserError
from mtl_perception.networks import DeployModel, build_model, load_checkpoint, save_checkpoint


def _export(deploy: DeployModel, path, dynamic_size: bool = False) -> None:
    axes = {0: "batch", 1: "height", 2: "width"} if dynamic_size else {0: "batch"}
    image_axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    dynamic_axes = {name: image_axes for name in deploy.input_names}
    dynamic_axes.update({name: axes for name in deploy.output_names if name != "embedding"})
    if "embedding" in deploy.output_names:
        dynamic_axes["embedding"] = {0: "batch"}
    torch.onnx.export(
        deploy,
        deploy.example_inputs(),
        str(path),
        input_names=list(deploy.input_names),
        output_names=list(deploy.output_names),
        dynamic_axes=dynamic_axes,
        opset_version=17,
        dynamo=False,
    )


def _assert_onnx_matches_torch(session: ort.InferenceSession, deploy: DeployModel, inputs) -> None:
    with torch.no_grad():
        expected = [t.numpy() for t in deploy(*inputs)]
    feed = {name: x.numpy() for name, x in zip(deploy.input_names, inputs, strict=True)}
    actual = session.run(list(deploy.output_names), feed)
    for name, want, got in zip(deploy.output_names, expected, actual, strict=True):
        assert got.shape == want.shape, name
        assert got.dtype == want.dtype, name
        if name == "semantic":  # argmax may flip where two logits tie within float noise
            assert (got == want).mean() > 0.999
        else:
            np.testing.assert_allclose(got, want, atol=2e-4, rtol=1e-3, err_msg=name)


@pytest.mark.parametrize(
    "config",
    [
        tiny_stereo_config(),
        tiny_stereo_config(tasks=("semantic",)),
        tiny_stereo_config(tasks=("disparity",)),
        tiny_stereo_config(hypothesis_selection=True, soft_argmin_radius=1),
        tiny_mono_config(),
    ],
    ids=["stereo", "semantic_only", "disparity_only", "hypothesis_selection", "mono"],
)
def test_onnx_export_matches_torch_at_two_sizes(config, tmp_path):
    torch.manual_seed(0)
    deploy = DeployModel(build_model(config).eval())
    path = tmp_path / "model.onnx"
    _export(deploy, path, dynamic_size=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == list(deploy.input_names)
    assert [o.name for o in session.get_outputs()] == list(deploy.output_names)
    count = len(deploy.input_names)
    _assert_onnx_matches_torch(session, deploy, random_images(count, batch=1))
    # Nothing size-dependent was frozen while tracing: another size (multiple of 32) still matches.
    _assert_onnx_matches_torch(session, deploy, random_images(count, batch=2, size=(96, 192), seed=1))


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    torch.manual_seed(0)
    config = tiny_stereo_config(pretrained=True)  # must not need the weights file when loading back
    model = build_model(config).eval()
    path = save_checkpoint(tmp_path / "ckpt" / "model.pt", model, config, epoch=3, miou=0.5)
    loaded, loaded_config, meta = load_checkpoint(path)
    assert loaded_config == config
    assert meta == {"epoch": 3, "miou": 0.5}
    assert not loaded.training
    inputs = random_images(2)
    with torch.no_grad():
        for key, value in model(*inputs).items():
            torch.testing.assert_close(loaded(*inputs)[key], value, rtol=0, atol=0)
    payload = torch.load(path, weights_only=True)
    assert payload["format"] == "mtl_perception.checkpoint"
    assert payload["version"] == 1
    assert payload["model_config"]["input_size"] == [64, 128]


def test_mono_checkpoint_round_trip(tmp_path):
    config = tiny_mono_config()
    model = build_model(config).eval()
    loaded, loaded_config, _ = load_checkpoint(save_checkpoint(tmp_path / "mono.pt", model, config))
    assert loaded_config == config
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded.state_dict()[key], value)


def test_bad_checkpoint_files_raise_user_errors_naming_the_file(tmp_path):
    with pytest.raises(UserError, match=r"missing\.pt"):
        load_checkpoint(tmp_path / "missing.pt")
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x80\x04garbage")
    with pytest.raises(UserError, match=r"corrupt\.pt"):
        load_checkpoint(corrupt)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(2)}, foreign)
    with pytest.raises(UserError, match="not an mtl_perception checkpoint"):
        load_checkpoint(foreign)
    config = tiny_stereo_config()
    truncated = tmp_path / "truncated.pt"
    save_checkpoint(truncated, build_model(config), config)
    truncated.write_bytes(truncated.read_bytes()[:1000])
    with pytest.raises(UserError, match=r"truncated\.pt"):
        load_checkpoint(truncated)
