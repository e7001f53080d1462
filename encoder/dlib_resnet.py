"""dlib's 128-d face ResNet (`face_recognition_models`), read from its .dat file into PyTorch.

A training-time teacher only, like `teacher.DlibTeacher`, but one that runs inside the
training loop: it embeds the very augmented view the student sees (consistent distillation),
batched, in bfloat16 where the CPU has it, about 180 faces/s on two cores against dlib's ~25.
Serving never imports this module: the weights are read at training time from the installed
`face_recognition_models` package. One training recipe starts a student from them
(`chip_encoder_from_dlib`, `init_from: "dlib"`): that student, once trained, carries dlib's
weights as changed by its training, and so do the checkpoints it is exported to.

The network (dlib's dnn_face_recognition_ex.cpp, `anet_type`): a 7x7/2 conv, 3x3/2 max pool,
residual stages of 32 (3 blocks), 64 (4), 128 (3), 256 (3) and 256 (1) channels, the first
block of each stage after the first downsampling (conv stride 2, the shortcut a 2x2 average
pool), global average pooling and a 128-d linear layer without bias. Batch norm is folded into
per-channel affine layers. dlib's conventions kept here: convolutions with stride 2 and pools
have no padding; a residual sum of two maps of different sizes is the larger size with the
smaller zero-padded at the bottom/right (and channels past the smaller count); the input is
(RGB - mean) / 256.

The .dat format: dlib serialises a network as nested layers, each layer's details introduced by
its name ("con_4", "affine_", "fc_2", ...). A tensor is: a version (2), four dimensions, then
the values as little-endian float32. Integers are dlib's: one byte giving the byte count (and
0x80 for negative), then the bytes, little-endian.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .backbones import CHIP150_FROM_CROP112, chip_theta, dlib_residual_sum
from .teacher import TeacherUnavailable

CHIP_SIZE = 150
DLIB_MEAN_RGB = (122.782, 117.001, 104.298)
STAGES = ((32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))

# The mean similarity transform from facegate's 112x112 aligned crop (ArcFace template, MTCNN's
# five points) to dlib's own 150x150 chip (its five-point shape model, padding 0.25), measured on
# 150 LFW DevTrain photos: crop pixel (x, y, 1) -> chip pixel (a second sample of 150 gives a
# mean within 0.6 chip pixels of this, about its standard error: faces vary by ~7 px; the
# measuring script is in git history, commit 457f13c). The teacher's embeddings of chips made
# with this agree with its native ones to cosine 0.992 (mean) and give the same verification
# accuracy on held-out DevTrain people (0.995 vs 0.996).
CROP112_TO_CHIP = np.array(CHIP150_FROM_CROP112)


def _read_int(buf: bytes, pos: int) -> tuple[int, int]:
    head = buf[pos]
    n = head & 0x0F
    v = int.from_bytes(buf[pos + 1:pos + 1 + n], "little")
    return (-v if head & 0x80 else v), pos + 1 + n


def _read_tensor(buf: bytes, pos: int) -> tuple[np.ndarray, int]:
    version, pos = _read_int(buf, pos)
    if version != 2:
        raise ValueError(f"dlib tensor format {version}, expected 2")
    dims = []
    for _ in range(4):
        d, pos = _read_int(buf, pos)
        dims.append(d)
    n = int(np.prod(dims))
    return np.frombuffer(buf, dtype="<f4", count=n, offset=pos).copy(), pos + 4 * n


def read_dlib_layers(path: str | Path) -> list[tuple[str, np.ndarray, list[int]]]:
    """The parameter layers of a dlib .dat, in order from the input: (kind, values, ints after)."""
    buf = Path(path).read_bytes()
    layers = []
    for m in re.finditer(rb"\x01(\x05con_4|\x07affine_|\x04fc_2)", buf):
        kind, pos = m.group(1)[1:].decode(), m.end()
        head = []
        if kind == "fc_2":  # num_outputs, num_inputs, then the weights
            for _ in range(2):
                v, pos = _read_int(buf, pos)
                head.append(v)
        values, pos = _read_tensor(buf, pos)
        if kind == "con_4":  # num_filters, rows, cols, stride y, stride x, padding y, padding x
            for _ in range(7):
                v, pos = _read_int(buf, pos)
                head.append(v)
        layers.append((kind, values, head))
    return layers


class DlibResNet(nn.Module):
    """Input: B x 3 x 150 x 150 RGB in 0..255, aligned as dlib's chips. Output: dlib's raw 128-d
    descriptor (not normalised; dlib's own threshold is 0.6 on these)."""

    def __init__(self):
        super().__init__()
        convs: list[nn.Conv2d] = [nn.Conv2d(3, 32, 7, stride=2)]
        cin = 32
        for c, blocks, down in STAGES:
            for b in range(blocks):
                s = 2 if down and b == 0 else 1
                convs += [nn.Conv2d(cin, c, 3, stride=s, padding=0 if s == 2 else 1), nn.Conv2d(c, c, 3, padding=1)]
                cin = c
        self.convs = nn.ModuleList(convs)
        for i, conv in enumerate(convs):
            self.register_buffer(f"gamma{i}", torch.ones(1, conv.out_channels, 1, 1))
            self.register_buffer(f"beta{i}", torch.zeros(1, conv.out_channels, 1, 1))
        self.fc = nn.Linear(256, 128, bias=False)
        self.register_buffer("mean", torch.tensor(DLIB_MEAN_RGB).view(1, 3, 1, 1))

    def _conv_affine(self, i: int, x: torch.Tensor) -> torch.Tensor:
        return self.convs[i](x) * getattr(self, f"gamma{i}") + getattr(self, f"beta{i}")

    def activations(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """-> (the map after the stem and after each residual block, in order; the descriptor)."""
        x = (x - self.mean) / 256.0
        x = F.max_pool2d(F.relu(self._conv_affine(0, x)), 3, 2)
        maps, i = [x], 1
        for _, blocks, down in STAGES:
            for b in range(blocks):
                y = self._conv_affine(i + 1, F.relu(self._conv_affine(i, x)))
                i += 2
                x = F.relu(dlib_residual_sum(y, F.avg_pool2d(x, 2, 2) if down and b == 0 else x))
                maps.append(x)
        return maps, self.fc(x.mean((2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.activations(x)[1]

    @staticmethod
    def from_dat(path: str | Path) -> "DlibResNet":
        net = DlibResNet()
        layers = read_dlib_layers(path)
        convs = [v for v in layers if v[0] == "con_4"]
        affines = [v for v in layers if v[0] == "affine_"]
        fcs = [v for v in layers if v[0] == "fc_2"]
        if (len(convs), len(affines), len(fcs)) != (len(net.convs), len(net.convs), 1):
            raise ValueError(f"{path}: {len(convs)} convs, {len(affines)} affines, {len(fcs)} fc: not dlib's face ResNet")
        for i, (conv, (_, w, head), (_, ab, _)) in enumerate(zip(net.convs, convs, affines)):
            nf, nr, nc, sy, _, py, _ = head
            shape = tuple(conv.weight.shape)
            if (nf, nr, nc, sy, py) != (shape[0], shape[2], shape[3], conv.stride[0], conv.padding[0]):
                raise ValueError(f"{path}: conv {i} is {head}, expected {shape} stride {conv.stride} pad {conv.padding}")
            n = int(np.prod(shape))
            conv.weight.data = torch.from_numpy(w[:n].reshape(shape))
            conv.bias.data = torch.from_numpy(w[n:])
            getattr(net, f"gamma{i}").copy_(torch.from_numpy(ab[:nf]).view(1, -1, 1, 1))
            getattr(net, f"beta{i}").copy_(torch.from_numpy(ab[nf:]).view(1, -1, 1, 1))
        n_out, n_in = fcs[0][2]
        net.fc.weight.data = torch.from_numpy(fcs[0][1].reshape(n_in, n_out).T.copy())
        return net.eval().requires_grad_(False)


def default_dat() -> Path:
    try:
        import face_recognition_models as frm  # imports pkg_resources: setuptools<81
    except ImportError as e:
        raise TeacherUnavailable(f"the in-loop teacher needs the 'teacher' extra ({e}); run ./dev teacher") from None
    return Path(frm.face_recognition_model_location())


def crop_to_chip_theta(crop_size: int, chip_size: int = CHIP_SIZE) -> torch.Tensor:
    """affine_grid's theta that samples dlib's chip out of a crop_size aligned crop."""
    return chip_theta(crop_size, chip_size, CROP112_TO_CHIP)


class InLoopTeacher:
    """The teacher inside the training loop: embeds augmented views (B x 3 x S x S pixels 0..255
    in facegate's crop geometry) as L2-normalised, optionally centred descriptors."""

    def __init__(self, dat: str | Path | None = None, crop_size: int = 112, bf16: bool = False,
                 device: str | torch.device = "cpu", reads_chip: bool = False):
        self.net = DlibResNet.from_dat(dat or default_dat()).to(device)
        # reads_chip: the crops are dlib's chips already (align.py's "dlib150" geometry)
        self.theta = None if reads_chip else crop_to_chip_theta(crop_size).to(device)
        self.bf16 = bf16
        self.center: torch.Tensor | None = None

    def chips(self, pixels: torch.Tensor) -> torch.Tensor:
        if self.theta is None:
            return pixels
        grid = F.affine_grid(self.theta.expand(len(pixels), 2, 3), [len(pixels), 3, CHIP_SIZE, CHIP_SIZE],
                             align_corners=False)
        return F.grid_sample(pixels, grid, mode="bilinear", padding_mode="border", align_corners=False)

    @torch.no_grad()
    def descriptors(self, pixels: torch.Tensor, batch: int = 256) -> torch.Tensor:
        """dlib's raw descriptors, not normalised."""
        out = []
        for i in range(0, len(pixels), batch):
            x = self.chips(pixels[i:i + batch].float())
            with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                out.append(self.net(x).float())
        return torch.cat(out) if out else torch.zeros(0, 128)

    @torch.no_grad()
    def activations(self, pixels: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """The teacher's maps after its stem and after each residual block (float32), and its raw
        descriptors, of one batch: the targets of blockwise distillation (train.blockwise_loss)."""
        x = self.chips(pixels.float())
        with torch.autocast(device_type=x.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            maps, d = self.net.activations(x)
        return [m.float() for m in maps], d.float()

    def embed(self, descriptors: torch.Tensor) -> torch.Tensor:
        """Raw descriptors -> what __call__ returns: L2-normalised, centred if `center` is set."""
        e = F.normalize(descriptors, dim=1)
        return F.normalize(e - self.center, dim=1) if self.center is not None else e

    def raw(self, pixels: torch.Tensor, batch: int = 256) -> torch.Tensor:
        return F.normalize(self.descriptors(pixels, batch), dim=1)

    def __call__(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.embed(self.descriptors(pixels))


def chip_encoder_from_dlib(config, dat: str | Path | None = None, center: torch.Tensor | None = None):
    """A FaceEncoder of the `chip_resnet` backbone and "pool" head (face_encoder.EncoderConfig)
    whose weights start as dlib's: its affine layers folded into the convolutions, facegate's
    input normalisation ((x - 127.5) / 128) folded into the first one (which has no padding, so
    the fold is exact), and its 128-d layer as the head. The head's bias subtracts `center` (a
    raw-descriptor mean, optional), which is how the teacher is centred for distillation. On
    facegate's crops the result equals the teacher (`InLoopTeacher.raw`) up to float error.
    A start for training (like DistilBERT's student taken from its teacher's layers): the
    weights come from the installed `face_recognition_models` and are read at training time."""
    from .face_encoder import FaceEncoder

    if config.backbone != "chip_resnet" or config.head != "pool":
        raise ValueError(f"dlib's weights fit a chip_resnet backbone with a pool head, not {config.to_dict()}")
    model = FaceEncoder(config)
    dlib = DlibResNet.from_dat(dat or default_dat())
    if len(model.backbone.convs) != len(dlib.convs) or model.backbone.stages != STAGES:
        raise ValueError(f"dlib's weights fit dlib's stages {STAGES}, not {model.backbone.stages}")
    mean = torch.tensor(DLIB_MEAN_RGB)
    with torch.no_grad():
        for i, (dst, src) in enumerate(zip(model.backbone.convs, dlib.convs)):
            g, b = getattr(dlib, f"gamma{i}").flatten(), getattr(dlib, f"beta{i}").flatten()
            w, bias = src.weight * g.view(-1, 1, 1, 1), src.bias * g + b
            if i == 0:   # dlib's input (p - mean) / 256 = 0.5 x + (127.5 - mean) / 256, x = (p - 127.5) / 128
                bias = bias + (w * ((127.5 - mean) / 256).view(1, 3, 1, 1)).sum((1, 2, 3))
                w = w * 0.5
            dst.weight.copy_(w)
            dst.bias.copy_(bias)
        model.head_fc.weight.copy_(dlib.fc.weight)
        model.head_fc.bias.copy_(-dlib.fc.weight @ torch.zeros(256) if center is None else -center)
    return model
