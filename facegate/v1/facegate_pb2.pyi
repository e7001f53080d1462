from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Decision(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DECISION_UNSPECIFIED: _ClassVar[Decision]
    ACCEPT: _ClassVar[Decision]
    REJECT: _ClassVar[Decision]

class Reason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REASON_UNSPECIFIED: _ClassVar[Reason]
    MATCH: _ClassVar[Reason]
    NO_FACE: _ClassVar[Reason]
    MULTIPLE_FACES: _ClassVar[Reason]
    FACE_TOO_SMALL: _ClassVar[Reason]
    LOW_QUALITY: _ClassVar[Reason]
    TOO_DARK: _ClassVar[Reason]
    TRIGGER_NOT_HEARD: _ClassVar[Reason]
    NO_MATCH: _ClassVar[Reason]
DECISION_UNSPECIFIED: Decision
ACCEPT: Decision
REJECT: Decision
REASON_UNSPECIFIED: Reason
MATCH: Reason
NO_FACE: Reason
MULTIPLE_FACES: Reason
FACE_TOO_SMALL: Reason
LOW_QUALITY: Reason
TOO_DARK: Reason
TRIGGER_NOT_HEARD: Reason
NO_MATCH: Reason

class EnrollRequest(_message.Message):
    __slots__ = ("subject_id", "image", "photo_name")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    PHOTO_NAME_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    image: bytes
    photo_name: str
    def __init__(self, subject_id: _Optional[str] = ..., image: _Optional[bytes] = ..., photo_name: _Optional[str] = ...) -> None: ...

class DuplicateWarning(_message.Message):
    __slots__ = ("other_subject", "distance")
    OTHER_SUBJECT_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    other_subject: str
    distance: float
    def __init__(self, other_subject: _Optional[str] = ..., distance: _Optional[float] = ...) -> None: ...

class EnrollResponse(_message.Message):
    __slots__ = ("photo_name", "subject_id", "status", "reason", "detail", "template_id", "duplicates", "error_code")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[EnrollResponse.Status]
        ACCEPTED: _ClassVar[EnrollResponse.Status]
        ALREADY_ENROLLED: _ClassVar[EnrollResponse.Status]
        REJECTED: _ClassVar[EnrollResponse.Status]
    STATUS_UNSPECIFIED: EnrollResponse.Status
    ACCEPTED: EnrollResponse.Status
    ALREADY_ENROLLED: EnrollResponse.Status
    REJECTED: EnrollResponse.Status
    PHOTO_NAME_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    TEMPLATE_ID_FIELD_NUMBER: _ClassVar[int]
    DUPLICATES_FIELD_NUMBER: _ClassVar[int]
    ERROR_CODE_FIELD_NUMBER: _ClassVar[int]
    photo_name: str
    subject_id: str
    status: EnrollResponse.Status
    reason: Reason
    detail: str
    template_id: int
    duplicates: _containers.RepeatedCompositeFieldContainer[DuplicateWarning]
    error_code: str
    def __init__(self, photo_name: _Optional[str] = ..., subject_id: _Optional[str] = ..., status: _Optional[_Union[EnrollResponse.Status, str]] = ..., reason: _Optional[_Union[Reason, str]] = ..., detail: _Optional[str] = ..., template_id: _Optional[int] = ..., duplicates: _Optional[_Iterable[_Union[DuplicateWarning, _Mapping]]] = ..., error_code: _Optional[str] = ...) -> None: ...

class DeleteSubjectRequest(_message.Message):
    __slots__ = ("subject_id",)
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    def __init__(self, subject_id: _Optional[str] = ...) -> None: ...

class DeleteSubjectResponse(_message.Message):
    __slots__ = ("subject_id", "removed", "removed_from", "deleted_at", "deleted_by", "receipt_id")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FIELD_NUMBER: _ClassVar[int]
    REMOVED_FROM_FIELD_NUMBER: _ClassVar[int]
    DELETED_AT_FIELD_NUMBER: _ClassVar[int]
    DELETED_BY_FIELD_NUMBER: _ClassVar[int]
    RECEIPT_ID_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    removed: int
    removed_from: _containers.RepeatedCompositeFieldContainer[RemovedFrom]
    deleted_at: str
    deleted_by: str
    receipt_id: str
    def __init__(self, subject_id: _Optional[str] = ..., removed: _Optional[int] = ..., removed_from: _Optional[_Iterable[_Union[RemovedFrom, _Mapping]]] = ..., deleted_at: _Optional[str] = ..., deleted_by: _Optional[str] = ..., receipt_id: _Optional[str] = ...) -> None: ...

class RemovedFrom(_message.Message):
    __slots__ = ("index_version", "templates", "index_name")
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    INDEX_NAME_FIELD_NUMBER: _ClassVar[int]
    index_version: str
    templates: int
    index_name: str
    def __init__(self, index_version: _Optional[str] = ..., templates: _Optional[int] = ..., index_name: _Optional[str] = ...) -> None: ...

class StageResult(_message.Message):
    __slots__ = ("name", "outcome", "score", "seconds")
    NAME_FIELD_NUMBER: _ClassVar[int]
    OUTCOME_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    name: str
    outcome: str
    score: float
    seconds: float
    def __init__(self, name: _Optional[str] = ..., outcome: _Optional[str] = ..., score: _Optional[float] = ..., seconds: _Optional[float] = ...) -> None: ...

class VerifyRequest(_message.Message):
    __slots__ = ("subject_id", "image", "site", "audio")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    image: bytes
    site: str
    audio: bytes
    def __init__(self, subject_id: _Optional[str] = ..., image: _Optional[bytes] = ..., site: _Optional[str] = ..., audio: _Optional[bytes] = ...) -> None: ...

class VerifyResponse(_message.Message):
    __slots__ = ("decision", "reason", "subject_id", "distance", "threshold", "site", "light_profile", "encoder_version", "latency_ms", "detail", "stages")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    LIGHT_PROFILE_FIELD_NUMBER: _ClassVar[int]
    ENCODER_VERSION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    reason: Reason
    subject_id: str
    distance: float
    threshold: float
    site: str
    light_profile: str
    encoder_version: str
    latency_ms: float
    detail: str
    stages: _containers.RepeatedCompositeFieldContainer[StageResult]
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., reason: _Optional[_Union[Reason, str]] = ..., subject_id: _Optional[str] = ..., distance: _Optional[float] = ..., threshold: _Optional[float] = ..., site: _Optional[str] = ..., light_profile: _Optional[str] = ..., encoder_version: _Optional[str] = ..., latency_ms: _Optional[float] = ..., detail: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[StageResult, _Mapping]]] = ...) -> None: ...

class Neighbour(_message.Message):
    __slots__ = ("subject_id", "distance")
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    DISTANCE_FIELD_NUMBER: _ClassVar[int]
    subject_id: str
    distance: float
    def __init__(self, subject_id: _Optional[str] = ..., distance: _Optional[float] = ...) -> None: ...

class IdentifyRequest(_message.Message):
    __slots__ = ("image", "site", "k", "audio")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    site: str
    k: int
    audio: bytes
    def __init__(self, image: _Optional[bytes] = ..., site: _Optional[str] = ..., k: _Optional[int] = ..., audio: _Optional[bytes] = ...) -> None: ...

class IdentifyResponse(_message.Message):
    __slots__ = ("decision", "reason", "subject_id", "votes", "votes_needed", "neighbours", "threshold", "site", "light_profile", "encoder_version", "latency_ms", "detail", "stages")
    DECISION_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SUBJECT_ID_FIELD_NUMBER: _ClassVar[int]
    VOTES_FIELD_NUMBER: _ClassVar[int]
    VOTES_NEEDED_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    SITE_FIELD_NUMBER: _ClassVar[int]
    LIGHT_PROFILE_FIELD_NUMBER: _ClassVar[int]
    ENCODER_VERSION_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    DETAIL_FIELD_NUMBER: _ClassVar[int]
    STAGES_FIELD_NUMBER: _ClassVar[int]
    decision: Decision
    reason: Reason
    subject_id: str
    votes: int
    votes_needed: int
    neighbours: _containers.RepeatedCompositeFieldContainer[Neighbour]
    threshold: float
    site: str
    light_profile: str
    encoder_version: str
    latency_ms: float
    detail: str
    stages: _containers.RepeatedCompositeFieldContainer[StageResult]
    def __init__(self, decision: _Optional[_Union[Decision, str]] = ..., reason: _Optional[_Union[Reason, str]] = ..., subject_id: _Optional[str] = ..., votes: _Optional[int] = ..., votes_needed: _Optional[int] = ..., neighbours: _Optional[_Iterable[_Union[Neighbour, _Mapping]]] = ..., threshold: _Optional[float] = ..., site: _Optional[str] = ..., light_profile: _Optional[str] = ..., encoder_version: _Optional[str] = ..., latency_ms: _Optional[float] = ..., detail: _Optional[str] = ..., stages: _Optional[_Iterable[_Union[StageResult, _Mapping]]] = ...) -> None: ...

class ClusterPhoto(_message.Message):
    __slots__ = ("image", "name")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    image: bytes
    name: str
    def __init__(self, image: _Optional[bytes] = ..., name: _Optional[str] = ...) -> None: ...

class ClusterRequest(_message.Message):
    __slots__ = ("photos", "k")
    PHOTOS_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    photos: _containers.RepeatedCompositeFieldContainer[ClusterPhoto]
    k: int
    def __init__(self, photos: _Optional[_Iterable[_Union[ClusterPhoto, _Mapping]]] = ..., k: _Optional[int] = ...) -> None: ...

class ClusterAssignment(_message.Message):
    __slots__ = ("name", "cluster", "reason")
    NAME_FIELD_NUMBER: _ClassVar[int]
    CLUSTER_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    name: str
    cluster: int
    reason: Reason
    def __init__(self, name: _Optional[str] = ..., cluster: _Optional[int] = ..., reason: _Optional[_Union[Reason, str]] = ...) -> None: ...

class Centroid(_message.Message):
    __slots__ = ("vector",)
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    vector: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, vector: _Optional[_Iterable[float]] = ...) -> None: ...

class ClusterResponse(_message.Message):
    __slots__ = ("k", "assignments", "centroids", "silhouette")
    K_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    CENTROIDS_FIELD_NUMBER: _ClassVar[int]
    SILHOUETTE_FIELD_NUMBER: _ClassVar[int]
    k: int
    assignments: _containers.RepeatedCompositeFieldContainer[ClusterAssignment]
    centroids: _containers.RepeatedCompositeFieldContainer[Centroid]
    silhouette: float
    def __init__(self, k: _Optional[int] = ..., assignments: _Optional[_Iterable[_Union[ClusterAssignment, _Mapping]]] = ..., centroids: _Optional[_Iterable[_Union[Centroid, _Mapping]]] = ..., silhouette: _Optional[float] = ...) -> None: ...

class GetStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetStatusResponse(_message.Message):
    __slots__ = ("subjects", "templates", "encoder_version", "index_version", "generation", "encoder_arithmetic")
    SUBJECTS_FIELD_NUMBER: _ClassVar[int]
    TEMPLATES_FIELD_NUMBER: _ClassVar[int]
    ENCODER_VERSION_FIELD_NUMBER: _ClassVar[int]
    INDEX_VERSION_FIELD_NUMBER: _ClassVar[int]
    GENERATION_FIELD_NUMBER: _ClassVar[int]
    ENCODER_ARITHMETIC_FIELD_NUMBER: _ClassVar[int]
    subjects: int
    templates: int
    encoder_version: str
    index_version: str
    generation: int
    encoder_arithmetic: str
    def __init__(self, subjects: _Optional[int] = ..., templates: _Optional[int] = ..., encoder_version: _Optional[str] = ..., index_version: _Optional[str] = ..., generation: _Optional[int] = ..., encoder_arithmetic: _Optional[str] = ...) -> None: ...
