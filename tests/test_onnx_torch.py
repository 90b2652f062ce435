"""Networks exported by ``torch.onnx.export`` and imported by dc-engine: the forward pass
matches onnxruntime on the same file (float32), and the backward pass matches PyTorch's
autograd (float64), for an MLP, LeNet-5, a VGG block with BatchNorm, a small ResNet, a
SqueezeNet-style net and grouped / depthwise convolutions. (PyTorch writes its
LocalResponseNorm as elementwise arithmetic, not ONNX LRN: tests/test_onnx.py covers LRN.)

PyTorch and onnxruntime are test oracles only; without them these tests skip.
"""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
torch = pytest.importorskip("torch")
nn = torch.nn

from dc_engine.io.onnx import from_onnx  # noqa: E402


def mlp():
    return nn.Sequential(nn.Linear(784, 300), nn.ReLU(), nn.Linear(300, 100), nn.ReLU(),
                         nn.Linear(100, 10)), (784,)


class LeNet5(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 20, 5), nn.Conv2d(20, 50, 5)
        self.ip1, self.ip2 = nn.Linear(800, 500), nn.Linear(500, 10)

    def forward(self, x):
        x = nn.functional.max_pool2d(self.conv1(x), 2)
        x = nn.functional.max_pool2d(self.conv2(x), 2)
        x = x.view(x.size(0), -1)  # Shape -> Gather -> Concat -> Reshape in the file
        return self.ip2(nn.functional.relu(self.ip1(x)))


def lenet5():
    return LeNet5(), (1, 28, 28)


def vgg_bn():
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
        nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 4 * 4, 32), nn.BatchNorm1d(32),
        nn.ReLU(), nn.Linear(32, 10)), (3, 16, 16)


class Block(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None if stride == 1 and cin == cout else nn.Sequential(
            nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        y = self.b2(self.c2(torch.relu(self.b1(self.c1(x)))))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, 1, 1, bias=False), nn.BatchNorm2d(8),
                                  nn.ReLU())
        self.layer1, self.layer2 = Block(8, 8, 1), Block(8, 16, 2)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(self.layer2(self.layer1(self.stem(x)))), 1))


def resnet():
    return ResNet(), (3, 16, 16)


class Fire(nn.Module):
    def __init__(self, cin, s, e):
        super().__init__()
        self.squeeze = nn.Conv2d(cin, s, 1)
        self.e1, self.e3 = nn.Conv2d(s, e, 1), nn.Conv2d(s, e, 3, padding=1)

    def forward(self, x):
        x = torch.relu(self.squeeze(x))
        return torch.cat([torch.relu(self.e1(x)), torch.relu(self.e3(x))], 1)


def squeezenet():
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, stride=2), nn.ReLU(), nn.MaxPool2d(3, 2, ceil_mode=True),
        Fire(16, 4, 8), Fire(16, 4, 8), nn.MaxPool2d(3, 2, ceil_mode=True), Fire(16, 8, 16),
        nn.Dropout(0.5), nn.Conv2d(32, 10, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten()), (3, 31, 31)


def grouped():
    return nn.Sequential(
        nn.Conv2d(8, 16, 3, padding=1, groups=4), nn.ReLU(),
        nn.Conv2d(16, 16, 3, stride=2, padding=1, groups=16), nn.ReLU(),
        nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False),
        nn.Conv2d(16, 8, 1), nn.Flatten(),
        nn.Linear(8 * 3 * 3, 5)), (8, 9, 9)


NETS = {"mlp": mlp, "lenet5": lenet5, "vgg_bn": vgg_bn, "resnet": resnet,
        "squeezenet": squeezenet, "grouped": grouped}


def _randomize_bn(net, gen):
    """Random BatchNorm statistics and affine parameters, so folding is not the identity."""
    for m in net.modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
            with torch.no_grad():
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.3)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.2)


def _export(net, shape, keep_bn: bool) -> bytes:
    """The ONNX bytes of ``net`` with a symbolic batch; ``keep_bn`` keeps BatchNormalization
    nodes (no constant folding) so dc-engine's folding is what is tested."""
    f = io.BytesIO()
    kw = dict(training=torch.onnx.TrainingMode.PRESERVE, do_constant_folding=False) \
        if keep_bn else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(2, *shape),), f, dynamo=False,
                          input_names=["x"], output_names=["y"],
                          dynamic_axes={"x": {0: "N"}, "y": {0: "N"}}, **kw)
    return f.getvalue()


def _built(name, keep_bn=False):
    gen = torch.Generator().manual_seed(7)
    torch.manual_seed(7)
    net, shape = NETS[name]()
    _randomize_bn(net, gen)
    net.eval()
    data = _export(net, shape, keep_bn)
    return net, shape, data, from_onnx(onnx.load_from_string(data), source=f"{name}.onnx")


def _rel(a, b) -> float:
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


@pytest.mark.parametrize("keep_bn", [False, True], ids=["torch-folded", "bn-nodes"])
@pytest.mark.parametrize("name", sorted(NETS))
def test_forward_matches_onnxruntime(name, keep_bn):
    net, shape, data, model = _built(name, keep_bn)
    nodes = {n.op_type for n in onnx.load_from_string(data).graph.node}
    has_bn = any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in net.modules())
    if keep_bn and has_bn:  # dc-engine's folding is what is tested
        assert "BatchNormalization" in nodes
    x = np.random.default_rng(0).standard_normal((5, *shape)).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    want = sess.run(None, {"x": x})[0]
    got = model.forward(x)
    assert got.shape == want.shape
    assert _rel(got, want) <= 1e-5
    with torch.no_grad():
        assert _rel(got, net(torch.from_numpy(x)).numpy()) <= 1e-5
    assert not any(l.type_name == "BatchNorm2D" for l in model.layers)  # all folded


def _torch_param_grads(net):
    """``{sanitised module path: (weight grad, bias grad)}`` of the Linear and Conv2d
    modules, keyed like dc-engine names its layers (``features.0`` -> ``features_0``)."""
    out = {}
    for path, m in net.named_modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            key = re.sub(r"[^A-Za-z0-9_-]+", "_", path)
            out[key] = (m.weight.grad.numpy(), None if m.bias is None else m.bias.grad.numpy())
    return out


@pytest.mark.parametrize("name", sorted(NETS))
def test_backward_matches_autograd(name):
    """dL/dx for every net (folding BatchNorm leaves it unchanged) and dL/dW, dL/db of every
    layer whose weights are the module's own (no BatchNorm folded into them), in float64."""
    net, shape, _, model = _built(name)
    model = model.astype(np.float64)
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, *shape))
    y = model.forward(x, train=True)
    r = rng.standard_normal(y.shape)
    model.zero_grad()
    dx = model.backward(r, input_grad=True)

    net = net.double()
    xt = torch.from_numpy(x).requires_grad_(True)
    (net(xt) * torch.from_numpy(r)).sum().backward()
    assert _rel(dx, xt.grad.numpy()) <= 1e-6
    has_bn = any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)) for m in net.modules())
    if has_bn:
        return  # folded weights are not the module's: their gradients differ by the scale
    tgrads = _torch_param_grads(net)
    compared = 0
    for layer in model.weighted_layers():
        key = layer.name.split("_", 1)[1] if layer.name.split("_", 1)[0] in (
            "conv", "gemm", "matmul") and layer.name not in tgrads else layer.name
        assert key in tgrads, (layer.name, sorted(tgrads))
        gw, gb = tgrads[key]
        assert _rel(layer.grads["W"].reshape(gw.shape), gw) <= 1e-6
        if gb is not None:
            assert _rel(layer.grads["b"], gb) <= 1e-6
        compared += 1
    assert compared == len(tgrads)


def test_layer_names_follow_the_modules():
    _, _, _, model = _built("lenet5")
    assert [l.name for l in model.weighted_layers()] == ["conv1", "conv2", "ip1", "ip2"]
    _, _, _, model = _built("mlp")
    assert [l.name for l in model.weighted_layers()] == ["gemm_0", "gemm_2", "gemm_4"]


def _compressed(model):
    """The model pruned by half and shared to 16 values per layer, then encoded."""
    from dc_engine.stages.encode import encode_model
    from dc_engine.stages.quantize import share_layer

    rng = np.random.default_rng(2)
    for layer in model.weighted_layers():
        w = layer.params["W"]
        w[rng.random(w.shape) < 0.5] = 0.0
        share_layer(layer, 4)
    return encode_model(model)


@pytest.mark.parametrize("name", sorted(NETS))
def test_export_runs_in_onnxruntime_dense_and_compressed(name, tmp_path):
    """Our model written back as ONNX (a compressed one decoded): onnxruntime on that file
    reproduces our outputs."""
    import dc_engine
    from dc_engine.io.onnx import save_onnx

    _, shape, _, model = _built(name, keep_bn=True)
    x = np.random.default_rng(3).standard_normal((4, *shape)).astype(np.float32)
    so = ort.SessionOptions()
    so.log_severity_level = 3
    for kind, m in (("dense", model), ("compressed", None)):
        if m is None:
            m = dc_engine.load(dc_engine.save(_compressed(model), tmp_path / "m.dc.h5"))
            assert m.compressed
        path = save_onnx(m, tmp_path / f"{kind}.onnx")
        sess = ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
        got = sess.run(None, {"input": x})[0]
        assert _rel(got, m.forward(x)) <= (1e-5 if kind == "dense" else 1e-4), kind
