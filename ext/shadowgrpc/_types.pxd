# Shared C types of the compiled kernels in ext/shadowgrpc/ (declarations only: no runtime module).

from libc.stdint cimport uint8_t, uint64_t

ctypedef uint8_t byte_t       # one byte of a serialized message or tensor
ctypedef Py_ssize_t pos_t     # a byte offset into a buffer


# Protobuf wire types.
cdef enum WireType:
    WT_VARINT = 0
    WT_I64 = 1
    WT_LEN = 2
    WT_SGROUP = 3
    WT_EGROUP = 4
    WT_I32 = 5


# What a nogil kernel found wrong; the caller turns it into ValueError("... at offset N") with the
# same text as the pure-Python twin.
cdef enum ErrorCode:
    E_OK = 0
    E_TRUNCATED_VARINT          # offset
    E_LONG_VARINT               # offset
    E_BAD_TAG                   # offset
    E_FIELD_ZERO                # offset
    E_BAD_WIRE_TYPE             # offset, a = wire type
    E_LENGTH_PAST_END           # offset, a = length
    E_TRUNCATED_FIXED           # offset, a = bits
    E_STRAY_END_GROUP           # offset
    E_GROUP_DEPTH               # offset
    E_GROUP_MISMATCH            # offset
    E_GROUP_UNTERMINATED        # offset
    E_WRONG_WIRE_TYPE           # offset, a = wire type, b = field number
    E_INVALID_UTF8              # offset, b = field number
    E_BYTES_TRUNCATED_LENGTH    # offset
    E_BYTES_PAST_END            # offset, a = element length


cdef struct WireError:
    ErrorCode code
    pos_t offset
    uint64_t a
    uint64_t b


# Streaming sketches (sketches/_c): a count and a histogram column index.
from libc.stdint cimport int64_t

ctypedef int64_t count_t      # one bin's count (int64, as in the serialized form)
ctypedef Py_ssize_t col_t     # a histogram column: 0 underflow, 1..nbins bins, nbins+1 overflow
