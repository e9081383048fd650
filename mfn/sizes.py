"""The body-size defaults every side agrees on: the servers' settings, the proxy's, the client's checks and the
codec's (mfn.runtime.codec.limits, which builds its limits on these). Standard library only, so a supervisor or
the CLI reads them without importing the codec."""

MIB = 1024 * 1024
MAX_BODY_BYTES = 64 * MIB  # the largest request or response body, unless a deploy raises it
MAX_BYTES_ELEMENT = 16 * MIB  # the largest single BYTES element
