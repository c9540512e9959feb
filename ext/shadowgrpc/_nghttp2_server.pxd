# The server side of libnghttp2's API (1.52, Debian 12's libnghttp2-dev) that shadowgrpc._h2srv_c
# uses, beside what shadowgrpc._nghttp2 declares for the client: the server session, the
# begin-headers callback, responses with a data provider and trailers. See
# /usr/include/nghttp2/nghttp2.h for the documentation of each.
from libc.stdint cimport int32_t, uint8_t, uint32_t

from shadowgrpc._nghttp2 cimport (nghttp2_data_provider, nghttp2_frame, nghttp2_nv, nghttp2_option, nghttp2_session,
                                  nghttp2_session_callbacks)


cdef extern from "nghttp2/nghttp2.h":
    ctypedef int (*nghttp2_on_begin_headers_callback)(nghttp2_session *session, const nghttp2_frame *frame, void *user_data) noexcept

    enum:
        NGHTTP2_DATA_FLAG_NO_END_STREAM
        NGHTTP2_FLAG_ACK
        NGHTTP2_ERR_DEFERRED
        NGHTTP2_FLOW_CONTROL_ERROR
        NGHTTP2_FRAME_SIZE_ERROR

    void nghttp2_session_callbacks_set_on_begin_headers_callback(nghttp2_session_callbacks *cbs, nghttp2_on_begin_headers_callback cb)
    int nghttp2_session_server_new2(nghttp2_session **session_ptr, const nghttp2_session_callbacks *callbacks, void *user_data,
                                    const nghttp2_option *option)
    int nghttp2_submit_response(nghttp2_session *session, int32_t stream_id, const nghttp2_nv *nva, size_t nvlen,
                                const nghttp2_data_provider *data_prd)
    int nghttp2_submit_trailer(nghttp2_session *session, int32_t stream_id, const nghttp2_nv *nva, size_t nvlen)
    int nghttp2_submit_goaway(nghttp2_session *session, uint8_t flags, int32_t last_stream_id, uint32_t error_code,
                              const uint8_t *opaque_data, size_t opaque_data_len)
    int nghttp2_submit_shutdown_notice(nghttp2_session *session)
    int32_t nghttp2_session_get_last_proc_stream_id(nghttp2_session *session)
    void nghttp2_option_set_no_auto_window_update(nghttp2_option *option, int val)
