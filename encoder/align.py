"""Face detection (facenet-pytorch MTCNN) and five-point alignment.

One photo -> one usable face, or a reason why not. Reasons are data, not exceptions:
the service turns them into REJECT answers, evaluation into a centre-crop fallback.

Two geometries (`AlignConfig.geometry`), each the framing an encoder was trained on:
- "arcface112": MTCNN's five points warped onto the ArcFace template, 112x112.
- "dlib150": dlib's own chip, 150x150 (the framing of dlib's face ResNet and of the encoders
  started from it). MTCNN finds the face; dlib's five-point shape model (eye corners and nose,
  public domain, from `face_recognition_models`) places the landmarks, started from a box
  derived from MTCNN's points; dlib's `get_face_chip` (padding 0.25) reads the chip straight
  from the photo, through an image pyramid where it downscales (a low-pass) and black where
  the chip reaches past the photo's edge, as dlib's training chips were made. A face smaller
  than the chip is first enlarged (bicubic, by a whole factor) so that the chip is never made
  by bilinear enlargement alone.
"""
from __future__ import annotations

import importlib.util
import math
import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch

from facegate.reasons import Reason

# The five-point template of ArcFace/InsightFace for a 112x112 crop: left eye, right eye,
# nose tip, left and right mouth corners (x, y). Scaled for other sizes.
TEMPLATE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float32,
)


GEOMETRIES = {"arcface112": 112, "dlib150": 150}     # geometry -> its usual crop size

# dlib150: the box dlib's shape model starts from, from MTCNN's five points: centre = their
# centroid + BOX_OFFSET x their spread (root mean square distance from the centroid), side =
# BOX_SIDE x the spread. Measured as the medians over 552 LFW DevTrain photos where dlib's
# HOG detector (the boxes the shape model was trained on) found exactly one face (spread of
# the ratios: 0.12, 0.15 and 0.29).
BOX_OFFSET = (-0.187, -0.124)
BOX_SIDE = 3.87
CHIP_PADDING = 0.25
MAX_ENLARGE = 4           # a small face is enlarged by at most this factor before its chip is taken


def landmark_model_path() -> Path:
    """dlib's five-point shape model: $FACEGATE_LANDMARKS, or the file in the installed
    face_recognition_models package (found without importing it: its __init__ imports
    pkg_resources)."""
    if os.environ.get("FACEGATE_LANDMARKS"):
        return Path(os.environ["FACEGATE_LANDMARKS"])
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FileNotFoundError("dlib's five-point landmark model is not installed: pip install face_recognition_models "
                                "(or set FACEGATE_LANDMARKS to shape_predictor_5_face_landmarks.dat)")
    return Path(spec.origin).parent / "models" / "shape_predictor_5_face_landmarks.dat"


@dataclass(frozen=True)
class AlignConfig:
    crop_size: int = 112
    geometry: str = "arcface112"       # GEOMETRIES: the framing the encoder was trained on
    min_detect_px: int = 20            # MTCNN's smallest face searched for
    detect_max_side: int = 1280        # a larger photo is searched downscaled to this long side (then
                                       # aligned from the full photo): bounds the detector's time and memory
    min_face_px: int = 40              # a face whose box side is smaller is FACE_TOO_SMALL
    sized_max_side: int = 640          # detection sized to a site (align's min_face_px): a photo is searched
                                       # at most at a camera frame's long side, so a large photo costs what a
                                       # frame costs (its smallest face found: 20 px x long side / 640)
    min_prob: float = 0.90             # detections below this are ignored
    multiple_ratio: float = 0.6        # another face with >= this share of the chosen face's area -> MULTIPLE_FACES
    min_visible: float = 0.6           # ...counting only faces with this share of their box inside the photo
    pad_retry: float = 0.3             # no face found: pad each side by this share and try again (tight ID scans)
    id_face_share: float = 0.25        # an ID photo (align's id_photo) is first searched for faces of at least
                                       # this share of its short side (see FaceAligner.detect)
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)

    def __post_init__(self):
        if self.geometry not in GEOMETRIES:
            raise ValueError(f"unknown geometry {self.geometry!r}; known: {sorted(GEOMETRIES)}")

    @staticmethod
    def for_geometry(geometry: str = "arcface112", crop_size: int | None = None) -> "AlignConfig":
        return AlignConfig(crop_size=crop_size or GEOMETRIES[geometry], geometry=geometry)


@dataclass
class FaceAlignment:
    reason: Reason | None                   # None: one usable face
    crop: np.ndarray | None = None          # crop_size x crop_size x 3 uint8, RGB
    box: np.ndarray | None = None           # x1, y1, x2, y2 in the photo's pixels
    landmarks: np.ndarray | None = None     # 5 x 2
    prob: float = 0.0
    faces: int = 0                          # confident detections in the photo
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def outcome(self) -> str:
        """The detect stage's outcome: OK, or the reason the face cannot be used."""
        return "OK" if self.reason is None else self.reason.value


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src -> dst (Umeyama)."""
    src = src.astype(np.float64)
    dst = dst.astype(np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1, 1] = -1
    rot = u @ sign @ vt
    scale = np.trace(np.diag(sig) @ sign) / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - scale * rot @ mu_s
    return m.astype(np.float32)


def warp_to_template(img: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    m = similarity_transform(landmarks, TEMPLATE_112 * (size / 112.0))
    return cv2.warpAffine(img, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


CENTRE_SHARE = 0.55   # the no-face fallback's square: this share of the photo's short side


def centre_crop(img: np.ndarray, size: int = 112, share: float = CENTRE_SHARE) -> np.ndarray:
    """The evaluation fallback for a photo with no face found (CONTRACT.md): the central square
    of side `share` x the short side, resized to the crop size. For LFW's 250x250 photos this is
    the central 137 px, where the face sits."""
    h, w = img.shape[:2]
    side = max(1, int(round(min(h, w) * share)))
    y0, x0 = (h - side) // 2, (w - side) // 2
    return cv2.resize(img[y0:y0 + side, x0:x0 + side], (size, size), interpolation=cv2.INTER_AREA)


def visible_areas(boxes: np.ndarray, h: int, w: int) -> np.ndarray:
    """The area of each box (N,4: x0, y0, x1, y1) that lies inside an h x w photo."""
    return _areas(np.clip(boxes, 0, [w, h, w, h]))


def _areas(boxes: np.ndarray) -> np.ndarray:
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def choose_face(boxes: np.ndarray, h: int, w: int) -> int:
    """The face a photo is about: the largest and most central, both judged by the part of each
    box inside the photo. MTCNN extends the box of a face cut off by the frame far beyond it
    (LFW's Winona_Ryder_0015: a bystander's box of 188 x 196 px in a 250 x 250 photo, two thirds
    of it outside), and scored by its full box such a face beat the person in the middle."""
    clipped = np.clip(boxes, 0, [w, h, w, h])
    centres = np.stack([(clipped[:, 0] + clipped[:, 2]) / 2, (clipped[:, 1] + clipped[:, 3]) / 2], 1)
    off = np.linalg.norm((centres - [w / 2, h / 2]) / [w, h], axis=1)  # 0 at the centre, ~0.7 in a corner
    return int(np.argmax(_areas(clipped) * (1.0 - off)))


def box_from_points(points: np.ndarray) -> tuple[float, float, float]:
    """The box dlib's shape model starts from, from MTCNN's five points: (centre x, centre y, side)."""
    c = points.mean(0)
    spread = float(np.sqrt(((points - c) ** 2).sum(1).mean()))
    return c[0] + BOX_OFFSET[0] * spread, c[1] + BOX_OFFSET[1] * spread, BOX_SIDE * spread


class DlibChips:
    """dlib's 150x150 chip of a face, from a box around it (the "dlib150" geometry)."""

    def __init__(self, size: int = 150):
        import dlib  # dlib-bin: its shape model and chip extraction

        self.dlib = dlib
        self.size = size
        self.shape_model = dlib.shape_predictor(str(landmark_model_path()))

    def _shape(self, img: np.ndarray, cx: float, cy: float, side: float):
        h = side / 2
        rect = self.dlib.rectangle(int(round(cx - h)), int(round(cy - h)), int(round(cx + h)), int(round(cy + h)))
        return self.shape_model(img, rect)

    def chip(self, img: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray:
        """The chip of the face in the box (centre, side) of an RGB uint8 photo. Only the region
        the chip can reach (4 box sides square) is handed to dlib, which builds its pyramid
        over the whole image it is given; outside the photo stays black either way."""
        H, W = img.shape[:2]
        r = 2 * side
        x0, y0 = max(0, int(cx - r)), max(0, int(cy - r))
        x1, y1 = min(W, int(math.ceil(cx + r)) + 1), min(H, int(math.ceil(cy + r)) + 1)
        if x1 - x0 < 2 or y1 - y0 < 2:
            return np.zeros((self.size, self.size, 3), np.uint8)
        region = np.ascontiguousarray(img[y0:y1, x0:x1])
        cx, cy = cx - x0, cy - y0
        shape = self._shape(region, cx, cy, side)
        source = self.dlib.get_face_chip_details(shape, size=self.size, padding=CHIP_PADDING).rect.width()
        k = min(MAX_ENLARGE, int(math.ceil(self.size / max(source, 1.0))))
        if k > 1:     # enlarge a small face (bicubic) so that dlib downscales to the chip, never enlarges
            region = cv2.resize(region, None, fx=k, fy=k, interpolation=cv2.INTER_CUBIC)
            shape = self._shape(region, (cx + 0.5) * k - 0.5, (cy + 0.5) * k - 0.5, side * k)
        return np.asarray(self.dlib.get_face_chip(region, shape, size=self.size, padding=CHIP_PADDING))

    def from_points(self, img: np.ndarray, points: np.ndarray) -> np.ndarray:
        return self.chip(img, *box_from_points(points))

    def centre(self, img: np.ndarray, share: float = CENTRE_SHARE) -> np.ndarray:
        """The evaluation fallback in this geometry: the shape model run on the central square
        (CONTRACT.md's centre crop, as the face_recognition library falls back to a box)."""
        h, w = img.shape[:2]
        side = max(1, int(round(min(h, w) * share)))
        return self.chip(img, w / 2, h / 2, side)


class FrozenNet(torch.nn.Module):
    """One of MTCNN's three networks traced and frozen (TorchScript) once: its calls skip the
    modules' Python and oneDNN's per-call weight reorders. The same arithmetic: on 500 photos (LFW
    and UTKFace; ID photos' first search, full searches, 640x480 frames at 40 and 80 px) the boxes,
    probabilities and points came out bit for bit as the eager networks' (an ID photo's detection,
    1 thread: 12.0 -> 11.2 ms; a frame's, where the pyramid's first level dominates: unchanged). The graph takes any batch size and image size (the networks have
    no shape-dependent branches); `dtype` stands for the network's parameters, which
    facenet-pytorch's detect_face reads its input type from."""

    def __init__(self, graph: torch.jit.ScriptModule, dtype: torch.dtype):
        super().__init__()
        self.graph = graph
        self.register_parameter("dtype_of", torch.nn.Parameter(torch.zeros(0, dtype=dtype), requires_grad=False))

    @classmethod
    def of(cls, net: torch.nn.Module, example_shape: tuple[int, ...]) -> torch.nn.Module:
        """net frozen, or net itself where it cannot be traced (then eager, as before)."""
        dtype = next(net.parameters()).dtype
        example = torch.rand(example_shape, dtype=dtype).contiguous(memory_format=torch.channels_last)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return cls(torch.jit.freeze(torch.jit.trace(net.eval(), example, check_trace=False)), dtype)
        except Exception:                                   # noqa: BLE001 - eager is always right
            return net

    def forward(self, x: torch.Tensor):
        return self.graph(x)


class FaceAligner:
    """MTCNN on one photo; picks the largest, most central face and aligns it to the geometry."""

    def __init__(self, config: AlignConfig = AlignConfig(), device: str | torch.device = "cpu"):
        from facenet_pytorch import MTCNN  # heavy import, kept out of module import time

        self.config = config
        self.mtcnn = MTCNN(
            keep_all=True, min_face_size=config.min_detect_px, thresholds=list(config.thresholds),
            post_process=False, device=device,
        )
        if torch.device(device).type == "cpu":
            # NHWC: PyTorch's CPU max-pooling (each of MTCNN's three nets pools) is several times
            # faster on it than on NCHW; a 640x480 frame, 1 thread: ~90 -> ~67 ms, the same boxes
            for net in (self.mtcnn.pnet, self.mtcnn.rnet, self.mtcnn.onet):
                net.to(memory_format=torch.channels_last)
            if os.environ.get("FACEGATE_FROZEN", "1") != "0":
                self.mtcnn.pnet = FrozenNet.of(self.mtcnn.pnet, (1, 3, 60, 80))
                self.mtcnn.rnet = FrozenNet.of(self.mtcnn.rnet, (4, 3, 24, 24))
                self.mtcnn.onet = FrozenNet.of(self.mtcnn.onet, (4, 3, 48, 48))
        self.chips = DlibChips(config.crop_size) if config.geometry == "dlib150" else None

    def crop(self, img: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The aligned crop of the face with these (MTCNN's) five points, in this geometry."""
        if self.chips is not None:
            return self.chips.from_points(img, landmarks)
        return warp_to_template(img, landmarks, self.config.crop_size)

    def fallback_crop(self, img: np.ndarray) -> np.ndarray:
        """CONTRACT.md's evaluation fallback for a photo with no face found, in this geometry."""
        if self.chips is not None:
            return self.chips.centre(img)
        return centre_crop(img, self.config.crop_size)

    def _detect(self, img: np.ndarray):
        if min(img.shape[:2]) < self.config.min_detect_px:      # too small for MTCNN's pyramid: no face
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        with torch.inference_mode():
            boxes, probs, points = self.mtcnn.detect(img, landmarks=True)
        if boxes is None:
            return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros((0, 5, 2), np.float32)
        keep = probs >= self.config.min_prob
        return boxes[keep].astype(np.float32), probs[keep].astype(np.float32), points[keep].astype(np.float32)

    def detect_scale(self, h: int, w: int, min_face_px: int | None = None) -> float:
        """The scale (<= 1) a photo of h x w is searched at. A photo whose long side exceeds
        `detect_max_side` is searched at that side; with `min_face_px` (the smallest face the
        caller cares about, e.g. a site's), the photo is shrunk so that such a face becomes
        MTCNN's smallest (`min_detect_px`): every level of the detector's pyramid shrinks with
        it (a 640x480 frame at 40 px: the pyramid of a 320x240 one); and to `sized_max_side` at
        most, where MTCNN's own pyramid resampling of a large photo costs more than its networks."""
        scale = min(1.0, self.config.detect_max_side / max(h, w))
        if min_face_px:
            scale = min(scale, self.config.min_detect_px / min_face_px, self.config.sized_max_side / max(h, w))
        return scale

    def detect(self, img: np.ndarray, min_face_px: int | None = None, id_photo: bool = False):
        """All confident faces: boxes (N,4), probs (N,), landmarks (N,5,2), in the photo's pixels.

        `id_photo` (enrollment: a face that fills a good part of the photo): the photo is first
        searched for faces of at least `id_face_share` of its short side only, a fraction of the
        full search's cost (an LFW photo: MTCNN on 80x80 instead of 250x250). What it finds is
        kept when the chosen face is large enough that any face of similar size (a rival under
        MULTIPLE_FACES' rule) was searched for as well; otherwise, or with no face found, the
        photo is searched as without `id_photo`. Landmarks are placed on the full photo either way.

        A tight crop (an ID-card scan whose face fills the frame) often hides the face from
        MTCNN's proposal net, so with no face found the photo is padded and searched again.
        A photo is searched downscaled (area averaging; `detect_scale`) and the boxes and
        landmarks scaled back to the photo's pixels, where the face is aligned: MTCNN's cost
        grows with the pixels and, on a noisy photo, with its candidate boxes (a 40-megapixel
        photo of noise took over 20 GB), where a face it can use is large in any such photo."""
        h, w = img.shape[:2]
        scale = self.detect_scale(h, w, min_face_px)
        if id_photo and (found := self._detect_large(img, scale)) is not None:
            return found
        if scale < 1.0:
            small = cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
            boxes, probs, points = self._detect_padded(small)
            return boxes / scale, probs, points / scale
        return self._detect_padded(img)

    def _detect_large(self, img: np.ndarray, scale: float):
        """detect()'s first search of an ID photo, or None where it cannot stand for the full search."""
        cfg = self.config
        h, w = img.shape[:2]
        smallest = max(cfg.min_face_px, cfg.id_face_share * min(h, w))     # the smallest face searched, px
        coarse = min(scale, cfg.min_detect_px / smallest)
        if coarse > 0.8 * scale:               # hardly smaller than the full search: not worth a second one
            return None
        small = cv2.resize(img, (max(1, round(w * coarse)), max(1, round(h * coarse))), interpolation=cv2.INTER_AREA)
        boxes, probs, points = self._detect(small)
        if len(boxes) == 0:
            return None
        boxes, points = boxes / coarse, points / coarse
        chosen = choose_face(boxes, h, w)
        side = min(boxes[chosen, 2] - boxes[chosen, 0], boxes[chosen, 3] - boxes[chosen, 1])
        # a rival has >= multiple_ratio of the chosen face's area: its side >= sqrt(ratio) x this side
        if side * math.sqrt(cfg.multiple_ratio) < smallest:
            return None
        return boxes, probs, points

    def _detect_padded(self, img: np.ndarray):
        boxes, probs, points = self._detect(img)
        if len(boxes) == 0 and self.config.pad_retry > 0:
            h, w = img.shape[:2]
            py, px = int(h * self.config.pad_retry), int(w * self.config.pad_retry)
            padded = cv2.copyMakeBorder(img, py, py, px, px, cv2.BORDER_CONSTANT, value=(0, 0, 0))
            boxes, probs, points = self._detect(padded)
            if len(boxes):
                boxes = boxes - np.array([px, py, px, py], np.float32)
                points = points - np.array([px, py], np.float32)
        return boxes, probs, points

    def align(self, img: np.ndarray, min_face_px: int | None = None, id_photo: bool = False) -> FaceAlignment:
        """The photo's face, aligned, or the reason why not. `min_face_px`: the smallest face the
        caller cares about (a site's policy): smaller faces are FACE_TOO_SMALL (or not found at
        all), and the photo is searched at the scale where such a face is MTCNN's smallest.
        None: the configured `min_face_px`, the photo searched at full size up to
        `detect_max_side` (the evaluation's rule). `id_photo`: an ID photo's large face is
        searched for first (detect)."""
        cfg = self.config
        boxes, probs, points = self.detect(img, min_face_px, id_photo)
        min_face = min_face_px or cfg.min_face_px
        if len(boxes) == 0:
            return FaceAlignment(Reason.NO_FACE, detail="no face found")
        h, w = img.shape[:2]
        sides = np.minimum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])
        areas = _areas(boxes)
        visible = visible_areas(boxes, h, w)
        i = choose_face(boxes, h, w)
        result = FaceAlignment(
            None, box=boxes[i], landmarks=points[i], prob=float(probs[i]), faces=len(boxes),
        )
        result.crop = self.crop(img, points[i])
        # A competing face is judged by what the photo shows of it: a face cut off by the frame's
        # edge (a passer-by at the border of a cropped photo) is not a second person at the door.
        rivals = [j for j in range(len(boxes)) if j != i and visible[j] >= cfg.min_visible * areas[j]
                  and visible[j] >= cfg.multiple_ratio * visible[i]]
        if sides[i] < min_face:
            result.reason = Reason.FACE_TOO_SMALL
            result.detail = f"face of {sides[i]:.0f} px, below {min_face} px"
        elif rivals:
            result.reason = Reason.MULTIPLE_FACES
            result.detail = f"{1 + len(rivals)} faces of similar size"
        return result
