"""dlib's 128-d face ResNet (the `face_recognition_models` package) as a training-time teacher.

Public domain, trained on ~3 million faces of which none is an LFW identity. Only training
needs it (`pip install .[teacher]`); serving never imports this module.
"""
from __future__ import annotations

import numpy as np


class TeacherUnavailable(RuntimeError):
    pass


class DlibTeacher:
    name = "dlib_resnet_v1"
    dim = 128

    def __init__(self):
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as e:  # the optional extra is not installed
            raise TeacherUnavailable(
                f"the distillation teacher needs the 'teacher' extra ({e}); run ./dev teacher"
            ) from None
        self._dlib = dlib
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def embed(self, img: np.ndarray, box: np.ndarray) -> np.ndarray:
        """The teacher's L2-normalised descriptor of the face in `box` (x1, y1, x2, y2) of an RGB photo.

        dlib places its own five landmarks inside our MTCNN box and aligns its own 150x150 chip."""
        x1, y1, x2, y2 = (int(round(v)) for v in box)
        rect = self._dlib.rectangle(x1, y1, x2, y2)
        shape = self.shape(np.ascontiguousarray(img), rect)
        d = np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(img), shape, 0), np.float32)
        return d / max(np.linalg.norm(d), 1e-12)
