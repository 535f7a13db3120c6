//! The OpenAPI path matcher over Harbor's 203-operation document, with hostile concrete
//! paths: never a panic, and a match is one of the document's operations.
#![no_main]

use std::sync::OnceLock;

use http::Method;
use libfuzzer_sys::fuzz_target;
use towerscope::openapi::OpenApiResolver;

static HARBOR: &str = include_str!("../../../shared/data/harbor-swagger.yaml");

fn resolver() -> &'static OpenApiResolver {
    static RESOLVER: OnceLock<OpenApiResolver> = OnceLock::new();
    RESOLVER.get_or_init(|| OpenApiResolver::from_yaml_str(HARBOR).expect("Harbor's document"))
}

const METHODS: [Method; 9] = [
    Method::GET,
    Method::PUT,
    Method::POST,
    Method::DELETE,
    Method::OPTIONS,
    Method::HEAD,
    Method::PATCH,
    Method::TRACE,
    Method::CONNECT,
];

fuzz_target!(|data: &[u8]| {
    let Some((first, rest)) = data.split_first() else {
        return;
    };
    let method = &METHODS[usize::from(*first) % METHODS.len()];
    let path = String::from_utf8_lossy(rest);
    // With and without the base path, so both the prefix check and the templates are reached.
    for path in [path.to_string(), format!("/api/v2.0{path}")] {
        if let Some(op) = resolver().resolve_path(method, &path) {
            assert!(resolver().operations().any(|(_, _, id)| id == op));
        }
    }
});
