//! Slots of the `COUNTERS` per-CPU array: the ADR's zero-allocation counters.

/// HTTP requests the proxy received from clients (client-side request starts).
pub const REQUESTS_TOTAL: u32 = 0;
/// Client requests answered with status >= 400, or whose connection closed
/// before a complete response.
pub const REQUESTS_FAILED: u32 = 1;
/// Client responses by status class: 2xx, 3xx, 4xx, 5xx, and `none` (the
/// connection closed before any status line). Interim 1xx responses are
/// skipped; a final status above 599 counts as 5xx.
pub const RESPONSES_2XX: u32 = 2;
pub const RESPONSES_3XX: u32 = 3;
pub const RESPONSES_4XX: u32 = 4;
pub const RESPONSES_5XX: u32 = 5;
pub const RESPONSES_NONE: u32 = 6;
/// Bytes the proxy read from client-side / upstream connections.
pub const BYTES_RECEIVED_CLIENT: u32 = 7;
pub const BYTES_RECEIVED_UPSTREAM: u32 = 8;
/// Bytes the proxy wrote to client-side / upstream connections.
pub const BYTES_SENT_CLIENT: u32 = 9;
pub const BYTES_SENT_UPSTREAM: u32 = 10;
/// Bytes on traced connections whose side is not known.
pub const BYTES_RECEIVED_UNKNOWN: u32 = 11;
pub const BYTES_SENT_UNKNOWN: u32 = 12;
/// Bytes and connections that are not HTTP/1.x (HTTP/2, TLS ciphertext, ...).
pub const UNCLASSIFIED_BYTES: u32 = 13;
pub const UNCLASSIFIED_CONNECTIONS: u32 = 14;
/// Connections the proxy accepted (client side) / opened (upstream).
pub const CONNECTIONS_ACCEPTED: u32 = 15;
pub const CONNECTIONS_CONNECTED: u32 = 16;
pub const CONNECTIONS_CLOSED: u32 = 17;
/// Sum of client-side request durations and TTFBs, microseconds.
pub const REQUEST_DURATION_SUM_US: u32 = 18;
pub const TTFB_SUM_US: u32 = 19;
/// Responses whose end the kernel could not find: the bytes of one call did
/// not fit the per-call parse budget, or the framing was malformed. The
/// connection resynchronises at its next request.
pub const FRAMING_LOST: u32 = 20;
/// Events (process lifecycle, adopted connections) lost because their ring
/// buffer was full.
pub const PROC_EVENTS_DROPPED: u32 = 21;
/// Payload capture: events and bytes sent to the agent, events dropped
/// because the ring buffer was full, bytes left out by the per-message cap
/// or the per-call limit.
pub const CAPTURE_EVENTS: u32 = 22;
pub const CAPTURE_BYTES: u32 = 23;
pub const CAPTURE_DROPS: u32 = 24;
pub const CAPTURE_CAPPED_BYTES: u32 = 25;
/// Requests seen while capture was on (the sampling sequence).
pub const CAPTURE_SEQUENCE: u32 = 26;

/// Connections that began with a TLS handshake record; of those, the ones
/// whose plaintext the OpenSSL probes delivered.
pub const TLS_CONNECTIONS: u32 = 27;
pub const TLS_PLAINTEXT_CONNECTIONS: u32 = 28;
/// Ciphertext bytes on TLS connections no plaintext was tied to (yet):
/// another TLS library, or a handshake before the tie.
pub const TLS_OPAQUE_BYTES: u32 = 29;
/// TLS wire bytes (records and handshakes) the proxy read / wrote, by side.
/// On a TLS connection `BYTES_*` count the plaintext HTTP bytes instead, so
/// that they are the same over HTTPS as over HTTP.
pub const TLS_BYTES_RECEIVED_CLIENT: u32 = 30;
pub const TLS_BYTES_RECEIVED_UPSTREAM: u32 = 31;
pub const TLS_BYTES_RECEIVED_UNKNOWN: u32 = 32;
pub const TLS_BYTES_SENT_CLIENT: u32 = 33;
pub const TLS_BYTES_SENT_UPSTREAM: u32 = 34;
pub const TLS_BYTES_SENT_UNKNOWN: u32 = 35;

/// HTTP/2 connections (client preface, or a server SETTINGS frame first).
pub const H2_CONNECTIONS: u32 = 36;
/// HTTP/2 streams the client side opened (HEADERS on a new odd stream id),
/// on both sides of the proxy; each is also a request (`REQUESTS_TOTAL` on
/// the client side, `PROVIDER_REQUESTS` upstream).
pub const H2_STREAMS_OPENED: u32 = 37;
/// HTTP/2 streams the server side ended (END_STREAM on HEADERS or DATA).
pub const H2_STREAMS_ENDED: u32 = 38;
/// RST_STREAM frames, either direction.
pub const H2_RST_STREAMS: u32 = 39;
/// DATA frame payload bytes the proxy read / wrote.
pub const H2_DATA_BYTES_RECEIVED: u32 = 40;
pub const H2_DATA_BYTES_SENT: u32 = 41;
/// Response HEADERS whose `:status` the kernel could not read without the
/// HPACK dynamic table (counted in no status class).
pub const H2_STATUS_UNDECODED: u32 = 42;
/// Directions of HTTP/2 connections whose frame boundaries were lost (more
/// frames in one call than the walk's budget, or a frame header split
/// across iovecs): the rest of that direction is not counted.
pub const H2_FRAMING_LOST: u32 = 43;
/// TLS plaintext bytes the OpenSSL probes saw that reached no traced
/// connection: the `SSL*` was never tied to a socket (no socket call nested
/// in an SSL call, no socket write that began with a record it wrote), or
/// the socket it is tied to is not traced. These bytes are in no other
/// counter and are parsed nowhere.
pub const TLS_UNTIED_BYTES: u32 = 44;

pub const COUNT: u32 = 45;
