//! gRPC request paths and status codes: parsing, canonical names, and the HTTP fallback.

use http::{HeaderMap, HeaderName, StatusCode};
use tonic::Code;

/// The header (or trailer) carrying a call's status code.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// The header (or trailer) carrying a call's status message, percent-encoded.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// The longest `package.Service/Method` accepted as an operation, in bytes; longer paths are
/// `unknown`.
pub const MAX_OPERATION_LEN: usize = 256;

/// Number of canonical status codes (`OK` = 0 to `UNAUTHENTICATED` = 16).
pub(super) const CODE_COUNT: usize = 17;

/// Canonical names, indexed by code.
const CODE_NAMES: [&str; CODE_COUNT] = [
    "OK",
    "CANCELLED",
    "UNKNOWN",
    "INVALID_ARGUMENT",
    "DEADLINE_EXCEEDED",
    "NOT_FOUND",
    "ALREADY_EXISTS",
    "PERMISSION_DENIED",
    "RESOURCE_EXHAUSTED",
    "FAILED_PRECONDITION",
    "ABORTED",
    "OUT_OF_RANGE",
    "UNIMPLEMENTED",
    "INTERNAL",
    "UNAVAILABLE",
    "DATA_LOSS",
    "UNAUTHENTICATED",
];

/// Go's names of the codes (`codes.Code.String()` in grpc-go), indexed by code: the
/// `grpc_code` values go-grpc-prometheus writes, which its dashboards and alerts filter on.
const GO_CODE_NAMES: [&str; CODE_COUNT] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

/// The canonical name of `code`, as the gRPC status code documentation spells it
/// (`OK`, `NOT_FOUND`, `DEADLINE_EXCEEDED`, ...): the `grpc_code` label value.
///
/// ```
/// use towerscope::grpc::code_name;
///
/// assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
/// assert_eq!(code_name(tonic::Code::Ok), "OK");
/// ```
pub fn code_name(code: Code) -> &'static str {
    CODE_NAMES[code_index(code)]
}

/// The name grpc-go gives `code` (`OK`, `NotFound`, `Canceled`, ...): the `grpc_code` label
/// value of the go-grpc-prometheus preset
/// ([`GrpcMetricNames::go_grpc_prometheus`](crate::grpc::GrpcMetricNames::go_grpc_prometheus)),
/// so that the dashboards and alerts written for go-grpc-prometheus match its series.
///
/// ```
/// use towerscope::grpc::go_code_name;
///
/// assert_eq!(go_code_name(tonic::Code::Cancelled), "Canceled");
/// assert_eq!(go_code_name(tonic::Code::DeadlineExceeded), "DeadlineExceeded");
/// ```
pub fn go_code_name(code: Code) -> &'static str {
    GO_CODE_NAMES[code_index(code)]
}

pub(super) fn code_index(code: Code) -> usize {
    // `Code` is a fieldless enum numbered 0..=16 like the wire values.
    (code as usize).min(CODE_COUNT - 1)
}

/// Whether `code` means the server failed (OpenTelemetry's rule for server spans):
/// `UNKNOWN`, `DEADLINE_EXCEEDED`, `UNIMPLEMENTED`, `INTERNAL`, `UNAVAILABLE` and `DATA_LOSS`.
/// Other non-OK codes are the caller's problem and leave the server span's status unset.
pub fn is_server_error(code: Code) -> bool {
    matches!(
        code,
        Code::Unknown
            | Code::DeadlineExceeded
            | Code::Unimplemented
            | Code::Internal
            | Code::Unavailable
            | Code::DataLoss
    )
}

/// The status code in `headers` (response headers of a trailers-only response, or
/// trailers); `UNKNOWN` when the value is not a canonical code, `None` when there is none.
pub fn status_in(headers: &HeaderMap) -> Option<Code> {
    headers
        .get(GRPC_STATUS)
        .map(|v| Code::from_bytes(v.as_bytes()))
}

/// The code of a response that carries no `grpc-status`, from its HTTP status, as the gRPC
/// specification's "HTTP to gRPC status code mapping" gives it; `UNKNOWN` for a 200 (a call
/// that ended without a status) and for every status the mapping does not name.
///
/// ```
/// use http::StatusCode;
/// use towerscope::grpc::code_from_http;
///
/// assert_eq!(code_from_http(StatusCode::SERVICE_UNAVAILABLE), tonic::Code::Unavailable);
/// assert_eq!(code_from_http(StatusCode::NOT_FOUND), tonic::Code::Unimplemented);
/// ```
pub fn code_from_http(status: StatusCode) -> Code {
    match status.as_u16() {
        400 => Code::Internal,
        401 => Code::Unauthenticated,
        403 => Code::PermissionDenied,
        404 => Code::Unimplemented,
        429 | 502..=504 => Code::Unavailable,
        _ => Code::Unknown,
    }
}

/// A gRPC operation read from a request path `/package.Service/Method`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GrpcOperation<'a> {
    full: &'a str,
    slash: usize,
}

impl<'a> GrpcOperation<'a> {
    /// Parses a request path. `None` unless it is `/{service}/{method}` where the service is
    /// dot-separated identifiers (`grpc.health.v1.Health`), the method an identifier
    /// (`Check`), and the whole at most [`MAX_OPERATION_LEN`] bytes.
    ///
    /// ```
    /// use towerscope::grpc::GrpcOperation;
    ///
    /// let op = GrpcOperation::from_path("/grpc.health.v1.Health/Check").unwrap();
    /// assert_eq!(op.as_str(), "grpc.health.v1.Health/Check");
    /// assert_eq!(op.service(), "grpc.health.v1.Health");
    /// assert_eq!(op.method(), "Check");
    /// assert!(GrpcOperation::from_path("/v2/library/alpine/manifests/latest").is_none());
    /// ```
    pub fn from_path(path: &'a str) -> Option<Self> {
        let full = path.strip_prefix('/')?;
        if full.len() > MAX_OPERATION_LEN {
            return None;
        }
        let slash = full.find('/')?;
        let (service, method) = (&full[..slash], &full[slash + 1..]);
        let valid = service.split('.').all(is_identifier) && is_identifier(method);
        valid.then_some(Self { full, slash })
    }

    /// `package.Service/Method`: the `operation` label and the span name.
    pub fn as_str(&self) -> &'a str {
        self.full
    }

    /// `package.Service` (`rpc.service`, go-grpc-prometheus' `grpc_service`).
    pub fn service(&self) -> &'a str {
        &self.full[..self.slash]
    }

    /// `Method` (`rpc.method`, go-grpc-prometheus' `grpc_method`).
    pub fn method(&self) -> &'a str {
        &self.full[self.slash + 1..]
    }
}

/// A protobuf-style identifier: ASCII letters, digits and `_`, not empty.
fn is_identifier(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_that_look_like_grpc_parse() {
        for (path, service, method) in [
            (
                "/grpc.health.v1.Health/Check",
                "grpc.health.v1.Health",
                "Check",
            ),
            ("/Greeter/SayHello", "Greeter", "SayHello"),
            ("/a_b.C9/do_it", "a_b.C9", "do_it"),
        ] {
            let op = GrpcOperation::from_path(path).unwrap();
            assert_eq!(op.service(), service);
            assert_eq!(op.method(), method);
            assert_eq!(op.as_str(), &path[1..]);
        }
    }

    #[test]
    fn other_paths_are_not_operations() {
        let long = format!("/{}/M", "a".repeat(MAX_OPERATION_LEN));
        for path in [
            "",
            "/",
            "//",
            "/Svc",
            "/Svc/",
            "/Svc/Method/extra",
            "Svc/Method",
            "/.Svc/Method",
            "/pkg..Svc/Method",
            "/pkg.Svc./Method",
            "/pkg.Svc/Me.thod",
            "/pkg.Svc/Me%20thod",
            "/pkg-1.Svc/Method",
            "/pkg.Svc/Méthod",
            &long,
        ] {
            assert_eq!(GrpcOperation::from_path(path), None, "{path}");
        }
    }

    #[test]
    fn every_code_has_its_canonical_name() {
        for i in 0..CODE_COUNT as i32 {
            let code = Code::from_i32(i);
            let name = code_name(code);
            assert_eq!(code_index(code), i as usize);
            assert!(name.bytes().all(|b| b.is_ascii_uppercase() || b == b'_'));
        }
        assert_eq!(code_name(Code::DeadlineExceeded), "DEADLINE_EXCEEDED");
        assert_eq!(code_name(Code::Unauthenticated), "UNAUTHENTICATED");
    }

    #[test]
    fn unparsable_status_is_unknown() {
        for value in ["13", "013", "17", "-1", "ok", ""] {
            let mut h = HeaderMap::new();
            h.insert(GRPC_STATUS, value.parse().unwrap());
            let expected = if value == "13" {
                Code::Internal
            } else {
                Code::Unknown
            };
            assert_eq!(status_in(&h), Some(expected), "{value:?}");
        }
        assert_eq!(status_in(&HeaderMap::new()), None);
    }

    #[test]
    fn server_errors_are_the_six_server_side_codes() {
        let errors: Vec<&str> = (0..CODE_COUNT as i32)
            .map(Code::from_i32)
            .filter(|c| is_server_error(*c))
            .map(code_name)
            .collect();
        assert_eq!(
            errors,
            [
                "UNKNOWN",
                "DEADLINE_EXCEEDED",
                "UNIMPLEMENTED",
                "INTERNAL",
                "UNAVAILABLE",
                "DATA_LOSS"
            ]
        );
    }

    #[test]
    fn http_statuses_map_as_the_spec_says() {
        for (status, code) in [
            (200, Code::Unknown),
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (500, Code::Unknown),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
        ] {
            assert_eq!(
                code_from_http(StatusCode::from_u16(status).unwrap()),
                code,
                "{status}"
            );
        }
    }
}
