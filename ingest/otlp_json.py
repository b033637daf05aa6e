"""OTLP/JSON <-> protobuf messages, a pure module: no Django.

OTLP/JSON is protobuf's JSON mapping with a few differences, so protobuf's generic
json_format cannot be used on request bodies (it reads trace and span ids as base64):

- trace_id, span_id and parent_span_id are hex strings, in either case;
- enums are integers (enum names are accepted too);
- field names are lowerCamelCase (the proto snake_case names are accepted too);
- 64-bit integers may be strings or numbers; doubles may be "NaN", "Infinity", "-Infinity";
- other bytes are base64; unknown fields are ignored.

decode_traces() / decode_metrics() walk the JSON document against the message
descriptors and build the request; anything malformed raises InvalidArgument naming the
offending field, and nothing else is ever raised. encode() writes a message (a response,
or google.rpc.Status) as OTLP/JSON.
"""

import base64
import json
import math
import re

from google.protobuf.descriptor import FieldDescriptor
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from ingest.errors import InvalidArgument

HEX_ID_FIELDS = frozenset({"trace_id", "span_id", "parent_span_id"})
ANY_VALUE = "opentelemetry.proto.common.v1.AnyValue"
MAX_ANY_VALUE_DEPTH = 32  # arrays / kvlists inside attribute values; deeper is refused

_HEX = re.compile(r"[0-9a-fA-F]*")
_INTEGER = re.compile(r"-?[0-9]{1,30}")  # bounded: int() of a huge digit string is slow
_DECIMAL = re.compile(r"-?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?")
_SPECIAL_DOUBLES = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

_T = FieldDescriptor
_INT_RANGES = {
    _T.TYPE_INT32: (-2**31, 2**31 - 1), _T.TYPE_SINT32: (-2**31, 2**31 - 1), _T.TYPE_SFIXED32: (-2**31, 2**31 - 1),
    _T.TYPE_UINT32: (0, 2**32 - 1), _T.TYPE_FIXED32: (0, 2**32 - 1),
    _T.TYPE_INT64: (-2**63, 2**63 - 1), _T.TYPE_SINT64: (-2**63, 2**63 - 1), _T.TYPE_SFIXED64: (-2**63, 2**63 - 1),
    _T.TYPE_UINT64: (0, 2**64 - 1), _T.TYPE_FIXED64: (0, 2**64 - 1),
}
_64_BIT = frozenset({_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64, _T.TYPE_UINT64, _T.TYPE_FIXED64})

_fields_cache = {}  # message full name -> {json name and proto name: field}


def decode_traces(body: bytes) -> ExportTraceServiceRequest:
    return _decode(body, ExportTraceServiceRequest())


def decode_metrics(body: bytes) -> ExportMetricsServiceRequest:
    return _decode(body, ExportMetricsServiceRequest())


def encode(message) -> bytes:
    """A message as OTLP/JSON bytes (lowerCamelCase, hex ids, int64 as strings)."""
    return json.dumps(_to_dict(message), separators=(",", ":"), allow_nan=False).encode()


# --- decoding ----------------------------------------------------------------------

def _decode(body, message):
    try:
        document = json.loads(body)
    except RecursionError:
        raise InvalidArgument("the JSON body is nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, too-long integers
        raise InvalidArgument(f"the body is not valid JSON: {exc}") from None
    _fill(message, document, "$", 0)
    return message


def _fields(descriptor):
    fields = _fields_cache.get(descriptor.full_name)
    if fields is None:
        fields = {f.json_name: f for f in descriptor.fields}
        fields.update({f.name: f for f in descriptor.fields})
        _fields_cache[descriptor.full_name] = fields
    return fields


def _fill(message, obj, path, depth):
    """Set message's fields from the JSON object obj; path names it in error messages."""
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{path}: expected a JSON object, got {_kind(obj)}")
    if message.DESCRIPTOR.full_name == ANY_VALUE:
        depth += 1
        if depth > MAX_ANY_VALUE_DEPTH:
            raise InvalidArgument(f"{path}: attribute values nested more than {MAX_ANY_VALUE_DEPTH} levels deep")
    fields = _fields(message.DESCRIPTOR)
    oneofs_set = {}
    for key, value in obj.items():
        field = fields.get(key)
        if field is None or value is None:  # unknown fields are ignored; null means "not set"
            continue
        oneof = field.containing_oneof
        if oneof is not None and oneofs_set.setdefault(oneof.name, field.name) != field.name:
            raise InvalidArgument(f"{path}: both {oneofs_set[oneof.name]!r} and {field.name!r} are set; "
                                  "only one of them may be")
        _set(message, field, value, f"{path}.{key}", depth)


def _set(message, field, value, path, depth):
    if field.is_repeated:
        if not isinstance(value, list):
            raise InvalidArgument(f"{path}: expected a JSON array, got {_kind(value)}")
        target = getattr(message, field.name)
        if field.message_type is not None:
            for index, item in enumerate(value):
                _fill(target.add(), item, f"{path}[{index}]", depth)
        else:
            _store(target.extend, [_scalar(field, item, f"{path}[{index}]") for index, item in enumerate(value)], path)
    elif field.message_type is not None:
        child = getattr(message, field.name)
        child.SetInParent()  # {} still marks a sub-message (or a oneof member) as present
        _fill(child, value, path, depth)
    else:
        _store(lambda v: setattr(message, field.name, v), _scalar(field, value, path), path)


def _store(setter, value, path):
    try:
        setter(value)
    except (ValueError, TypeError) as exc:  # e.g. a string with a lone surrogate, not encodable as UTF-8
        raise InvalidArgument(f"{path}: {exc}") from None


def _scalar(field, value, path):
    kind = field.type
    if kind == _T.TYPE_STRING:
        return _expect(value, str, "a string", path)
    if kind == _T.TYPE_BOOL:
        return _expect(value, bool, "true or false", path)
    if kind == _T.TYPE_BYTES:
        return _hex(value, path) if field.name in HEX_ID_FIELDS else _base64(value, path)
    if kind == _T.TYPE_ENUM:
        return _enum(field, value, path)
    if kind in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT):
        return _double(value, path)
    return _integer(kind, value, path)


def _expect(value, python_type, wanted, path):
    if not isinstance(value, python_type):
        raise InvalidArgument(f"{path}: expected {wanted}, got {_kind(value)}")
    return value


def _hex(value, path):
    """An id as hex; a wrong length is left for ingest.convert to reject the one span."""
    _expect(value, str, "a hex string", path)
    if not _HEX.fullmatch(value) or len(value) % 2:
        raise InvalidArgument(f"{path}: expected an even number of hex digits, got {value[:40]!r}")
    return bytes.fromhex(value)


def _base64(value, path):
    _expect(value, str, "a base64 string", path)
    # Accept the URL-safe alphabet and missing padding, as protobuf's JSON mapping does.
    text = value.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except ValueError:
        raise InvalidArgument(f"{path}: not valid base64") from None


def _enum(field, value, path):
    if isinstance(value, str):
        number = field.enum_type.values_by_name.get(value)
        if number is None:
            raise InvalidArgument(f"{path}: unknown {field.enum_type.name} {value[:40]!r}")
        return number.number
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidArgument(f"{path}: expected an enum number or name, got {_kind(value)}")
    return _in_range(value, _T.TYPE_INT32, path)


def _double(value, path):
    if isinstance(value, str):
        if value in _SPECIAL_DOUBLES:
            return _SPECIAL_DOUBLES[value]
        if _DECIMAL.fullmatch(value):
            return float(value)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:  # an integer literal beyond the double range
            raise InvalidArgument(f"{path}: number out of range") from None
    raise InvalidArgument(f"{path}: expected a number, \"NaN\", \"Infinity\" or \"-Infinity\", got {_kind(value)}")


def _integer(kind, value, path):
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str) and _INTEGER.fullmatch(value):
        number = int(value)
    else:
        number = None
    if number is None:
        raise InvalidArgument(f"{path}: expected an integer (a number or a decimal string), got {_kind(value)}")
    return _in_range(number, kind, path)


def _in_range(number, kind, path):
    low, high = _INT_RANGES[kind]
    if not low <= number <= high:
        raise InvalidArgument(f"{path}: {number} is out of range [{low}, {high}]")
    return number


def _kind(value):
    """How an unexpected JSON value is described in an error message."""
    if value is None:
        return "null"
    if isinstance(value, (str, int, float)):
        text = json.dumps(value)
        return text if len(text) <= 40 else text[:37] + "..."
    return {dict: "an object", list: "an array"}.get(type(value), type(value).__name__)


# --- encoding ----------------------------------------------------------------------

def _to_dict(message):
    result = {}
    for field, value in message.ListFields():  # set fields only, as proto3 JSON omits defaults
        if field.is_repeated:
            result[field.json_name] = [_to_json_value(field, item) for item in value]
        else:
            result[field.json_name] = _to_json_value(field, value)
    return result


def _to_json_value(field, value):
    kind = field.type
    if field.message_type is not None:
        return _to_dict(value)
    if kind == _T.TYPE_BYTES:
        return value.hex() if field.name in HEX_ID_FIELDS else base64.b64encode(value).decode()
    if kind in _64_BIT:
        return str(value)  # JSON numbers lose precision past 2**53
    if kind in (_T.TYPE_DOUBLE, _T.TYPE_FLOAT) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
    return value
