"""mfn's one JSON codec for tensors: KServe v2 and plain bodies, read and written the same way by the
TorchServe adapter (server side), mfn.Client and `mfn invoke` (client side).

- `limits`: body size, nesting and BYTES element limits, checked before parsing; the one JSON parser.
- `arrays`: one tensor's values between JSON and numpy, strictly (which values each datatype takes).
- `kserve`: KServe v2 tensor entries, the same for requests and answers.
- `server`, `client`: whole bodies on each side.

Every refusal is a RequestFailure naming the tensor and what to send instead: 400 for a malformed body,
413 past a size limit, 500 for an answer the handler made that JSON cannot carry.

Non-finite floats are written and read as NaN, Infinity and -Infinity, as Triton's HTTP endpoint and
Python's json do. These tokens are a common extension, not RFC 8259 JSON: strict parsers (JavaScript's
JSON.parse, Go's encoding/json) need a lenient mode for answers that hold them.
"""

from mfn.runtime.codec.limits import DEFAULT_LIMITS, MAX_BODY_BYTES, MAX_BYTES_ELEMENT, Limits
from mfn.runtime.codec.server import KSERVE_V2, PLAIN, DecodedRequest, ServerCodec, decode_request, encode_response

__all__ = [
    "DEFAULT_LIMITS",
    "KSERVE_V2",
    "MAX_BODY_BYTES",
    "MAX_BYTES_ELEMENT",
    "PLAIN",
    "DecodedRequest",
    "Limits",
    "ServerCodec",
    "decode_request",
    "encode_response",
]
