from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class AudioEncoding(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    AUDIO_ENCODING_UNSPECIFIED: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_WAV: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_MP3: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_OGG_OPUS: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_FLAC: _ClassVar[AudioEncoding]
    AUDIO_ENCODING_PCM_S16LE: _ClassVar[AudioEncoding]

class ServerState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    SERVER_STATE_UNSPECIFIED: _ClassVar[ServerState]
    SERVER_STATE_STARTING: _ClassVar[ServerState]
    SERVER_STATE_READY: _ClassVar[ServerState]
    SERVER_STATE_DRAINING: _ClassVar[ServerState]
    SERVER_STATE_FAILED: _ClassVar[ServerState]
AUDIO_ENCODING_UNSPECIFIED: AudioEncoding
AUDIO_ENCODING_WAV: AudioEncoding
AUDIO_ENCODING_MP3: AudioEncoding
AUDIO_ENCODING_OGG_OPUS: AudioEncoding
AUDIO_ENCODING_FLAC: AudioEncoding
AUDIO_ENCODING_PCM_S16LE: AudioEncoding
SERVER_STATE_UNSPECIFIED: ServerState
SERVER_STATE_STARTING: ServerState
SERVER_STATE_READY: ServerState
SERVER_STATE_DRAINING: ServerState
SERVER_STATE_FAILED: ServerState

class GenerationSettings(_message.Message):
    __slots__ = ("semantic_temperature", "coarse_temperature", "fine_temperature", "seed", "max_seconds")
    SEMANTIC_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    COARSE_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    FINE_TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    MAX_SECONDS_FIELD_NUMBER: _ClassVar[int]
    semantic_temperature: float
    coarse_temperature: float
    fine_temperature: float
    seed: int
    max_seconds: float
    def __init__(self, semantic_temperature: _Optional[float] = ..., coarse_temperature: _Optional[float] = ..., fine_temperature: _Optional[float] = ..., seed: _Optional[int] = ..., max_seconds: _Optional[float] = ...) -> None: ...

class SynthesizeRequest(_message.Message):
    __slots__ = ("request_id", "text", "voice", "encoding", "sample_rate_hz", "settings")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    voice: str
    encoding: AudioEncoding
    sample_rate_hz: int
    settings: GenerationSettings
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., voice: _Optional[str] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ..., settings: _Optional[_Union[GenerationSettings, _Mapping]] = ...) -> None: ...

class ServedBy(_message.Message):
    __slots__ = ("model", "device", "gpu_model", "batch_size", "queue_seconds", "inference_seconds", "hostname")
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    INFERENCE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    model: str
    device: str
    gpu_model: str
    batch_size: int
    queue_seconds: float
    inference_seconds: float
    hostname: str
    def __init__(self, model: _Optional[str] = ..., device: _Optional[str] = ..., gpu_model: _Optional[str] = ..., batch_size: _Optional[int] = ..., queue_seconds: _Optional[float] = ..., inference_seconds: _Optional[float] = ..., hostname: _Optional[str] = ...) -> None: ...

class SynthesizeResponse(_message.Message):
    __slots__ = ("request_id", "audio", "encoding", "sample_rate_hz", "sample_count", "duration_seconds", "served_by")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    audio: bytes
    encoding: AudioEncoding
    sample_rate_hz: int
    sample_count: int
    duration_seconds: float
    served_by: ServedBy
    def __init__(self, request_id: _Optional[str] = ..., audio: _Optional[bytes] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ..., sample_count: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., served_by: _Optional[_Union[ServedBy, _Mapping]] = ...) -> None: ...

class ItemError(_message.Message):
    __slots__ = ("code", "code_name", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    CODE_NAME_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: int
    code_name: str
    message: str
    def __init__(self, code: _Optional[int] = ..., code_name: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class SynthesizeBatchResponse(_message.Message):
    __slots__ = ("request_id", "result", "error")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    result: SynthesizeResponse
    error: ItemError
    def __init__(self, request_id: _Optional[str] = ..., result: _Optional[_Union[SynthesizeResponse, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class StreamSynthesizeRequest(_message.Message):
    __slots__ = ("request_id", "text", "voice", "encoding", "sample_rate_hz", "settings", "max_section_words")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    MAX_SECTION_WORDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    text: str
    voice: str
    encoding: AudioEncoding
    sample_rate_hz: int
    settings: GenerationSettings
    max_section_words: int
    def __init__(self, request_id: _Optional[str] = ..., text: _Optional[str] = ..., voice: _Optional[str] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ..., settings: _Optional[_Union[GenerationSettings, _Mapping]] = ..., max_section_words: _Optional[int] = ...) -> None: ...

class StreamSynthesizeResponse(_message.Message):
    __slots__ = ("start", "section", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    SECTION_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: StreamStart
    section: StreamSection
    end: StreamEnd
    def __init__(self, start: _Optional[_Union[StreamStart, _Mapping]] = ..., section: _Optional[_Union[StreamSection, _Mapping]] = ..., end: _Optional[_Union[StreamEnd, _Mapping]] = ...) -> None: ...

class StreamStart(_message.Message):
    __slots__ = ("request_id", "encoding", "sample_rate_hz", "section_count", "model", "voice")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ENCODING_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SECTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    VOICE_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    encoding: AudioEncoding
    sample_rate_hz: int
    section_count: int
    model: str
    voice: str
    def __init__(self, request_id: _Optional[str] = ..., encoding: _Optional[_Union[AudioEncoding, str]] = ..., sample_rate_hz: _Optional[int] = ..., section_count: _Optional[int] = ..., model: _Optional[str] = ..., voice: _Optional[str] = ...) -> None: ...

class StreamSection(_message.Message):
    __slots__ = ("index", "text", "audio", "sample_count", "duration_seconds", "served_by", "error")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    SERVED_BY_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    index: int
    text: str
    audio: bytes
    sample_count: int
    duration_seconds: float
    served_by: ServedBy
    error: ItemError
    def __init__(self, index: _Optional[int] = ..., text: _Optional[str] = ..., audio: _Optional[bytes] = ..., sample_count: _Optional[int] = ..., duration_seconds: _Optional[float] = ..., served_by: _Optional[_Union[ServedBy, _Mapping]] = ..., error: _Optional[_Union[ItemError, _Mapping]] = ...) -> None: ...

class StreamEnd(_message.Message):
    __slots__ = ("request_id", "section_count", "failed_count", "total_sample_count", "total_duration_seconds", "wall_seconds")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    SECTION_COUNT_FIELD_NUMBER: _ClassVar[int]
    FAILED_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_SAMPLE_COUNT_FIELD_NUMBER: _ClassVar[int]
    TOTAL_DURATION_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    section_count: int
    failed_count: int
    total_sample_count: int
    total_duration_seconds: float
    wall_seconds: float
    def __init__(self, request_id: _Optional[str] = ..., section_count: _Optional[int] = ..., failed_count: _Optional[int] = ..., total_sample_count: _Optional[int] = ..., total_duration_seconds: _Optional[float] = ..., wall_seconds: _Optional[float] = ...) -> None: ...

class ListVoicesRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Voice(_message.Message):
    __slots__ = ("name", "language")
    NAME_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    name: str
    language: str
    def __init__(self, name: _Optional[str] = ..., language: _Optional[str] = ...) -> None: ...

class ListVoicesResponse(_message.Message):
    __slots__ = ("voices",)
    VOICES_FIELD_NUMBER: _ClassVar[int]
    voices: _containers.RepeatedCompositeFieldContainer[Voice]
    def __init__(self, voices: _Optional[_Iterable[_Union[Voice, _Mapping]]] = ...) -> None: ...

class GetServerInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Device(_message.Message):
    __slots__ = ("name", "gpu_model", "memory_bytes")
    NAME_FIELD_NUMBER: _ClassVar[int]
    GPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    name: str
    gpu_model: str
    memory_bytes: int
    def __init__(self, name: _Optional[str] = ..., gpu_model: _Optional[str] = ..., memory_bytes: _Optional[int] = ...) -> None: ...

class ServerInfo(_message.Message):
    __slots__ = ("state", "state_message", "model", "devices", "capacity", "max_queued", "version", "native_sample_rate_hz", "sample_rates_hz", "encodings", "max_text_chars", "max_stream_text_chars", "max_clip_seconds", "hostname")
    STATE_FIELD_NUMBER: _ClassVar[int]
    STATE_MESSAGE_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    DEVICES_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    MAX_QUEUED_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    NATIVE_SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_RATES_HZ_FIELD_NUMBER: _ClassVar[int]
    ENCODINGS_FIELD_NUMBER: _ClassVar[int]
    MAX_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAM_TEXT_CHARS_FIELD_NUMBER: _ClassVar[int]
    MAX_CLIP_SECONDS_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    state: ServerState
    state_message: str
    model: str
    devices: _containers.RepeatedCompositeFieldContainer[Device]
    capacity: int
    max_queued: int
    version: str
    native_sample_rate_hz: int
    sample_rates_hz: _containers.RepeatedScalarFieldContainer[int]
    encodings: _containers.RepeatedScalarFieldContainer[AudioEncoding]
    max_text_chars: int
    max_stream_text_chars: int
    max_clip_seconds: float
    hostname: str
    def __init__(self, state: _Optional[_Union[ServerState, str]] = ..., state_message: _Optional[str] = ..., model: _Optional[str] = ..., devices: _Optional[_Iterable[_Union[Device, _Mapping]]] = ..., capacity: _Optional[int] = ..., max_queued: _Optional[int] = ..., version: _Optional[str] = ..., native_sample_rate_hz: _Optional[int] = ..., sample_rates_hz: _Optional[_Iterable[int]] = ..., encodings: _Optional[_Iterable[_Union[AudioEncoding, str]]] = ..., max_text_chars: _Optional[int] = ..., max_stream_text_chars: _Optional[int] = ..., max_clip_seconds: _Optional[float] = ..., hostname: _Optional[str] = ...) -> None: ...
