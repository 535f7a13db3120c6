//! Label values every family shares: the method table, `_OTHER`, `_overflow`.
//!
//! One table serves the server metrics, the client metrics and the span names, so that a
//! method is spelled and bounded the same way everywhere (CVE-2023-45142 came from a method
//! label taken verbatim from the request).

use http::Method;
use metrics::SharedString;

/// Label value of a method outside the configured set.
pub const OTHER_METHOD: &str = "_OTHER";

/// Label value of the operations (peers, job types) beyond a family's cap.
pub const OVERFLOW_LABEL: &str = "_overflow";

/// The eight RFC 9110 methods and PATCH, in label-table order.
pub(crate) const STANDARD_METHODS: [Method; 9] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::DELETE,
    Method::CONNECT,
    Method::OPTIONS,
    Method::TRACE,
    Method::PATCH,
];

/// The static name of a standard method, `None` for any other (extension methods are
/// client-chosen strings and never become a label or a span name).
pub(crate) fn standard_method(method: &Method) -> Option<&'static str> {
    Some(match *method {
        Method::GET => "GET",
        Method::HEAD => "HEAD",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::CONNECT => "CONNECT",
        Method::OPTIONS => "OPTIONS",
        Method::TRACE => "TRACE",
        Method::PATCH => "PATCH",
        _ => return None,
    })
}

/// The methods kept as label values, each with its index; every other method is `_OTHER`,
/// at index [`len`](Self::len).
#[derive(Debug, Clone)]
pub(crate) struct MethodTable {
    methods: Box<[(Method, SharedString)]>,
}

impl MethodTable {
    pub(crate) fn new(methods: &[Method]) -> Self {
        Self {
            methods: methods.iter().map(|m| (m.clone(), label_of(m))).collect(),
        }
    }

    /// The standard set ([`STANDARD_METHODS`]).
    #[cfg(feature = "reqwest")]
    pub(crate) fn standard() -> Self {
        Self::new(&STANDARD_METHODS)
    }

    /// The number of kept methods; `_OTHER` has this index.
    pub(crate) fn len(&self) -> usize {
        self.methods.len()
    }

    /// The index of `method`; methods outside the table share index [`len`](Self::len).
    pub(crate) fn index(&self, method: &Method) -> usize {
        // Standard methods compare without touching their bytes.
        self.methods
            .iter()
            .position(|(m, _)| m == method)
            .unwrap_or(self.methods.len())
    }

    /// The label value at `index` (`_OTHER` past the end).
    pub(crate) fn label(&self, index: usize) -> SharedString {
        self.methods
            .get(index)
            .map(|(_, label)| label.clone())
            .unwrap_or(SharedString::const_str(OTHER_METHOD))
    }
}

fn label_of(method: &Method) -> SharedString {
    match standard_method(method) {
        Some(name) => SharedString::const_str(name),
        None => SharedString::from(method.as_str().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn methods_outside_the_table_are_other() {
        let table = MethodTable::new(&[Method::GET, Method::POST]);
        assert_eq!(table.index(&Method::POST), 1);
        let purge = Method::from_bytes(b"PURGE").unwrap();
        assert_eq!(table.index(&purge), 2);
        assert_eq!(table.label(2).as_ref(), OTHER_METHOD);
        assert_eq!(table.label(0).as_ref(), "GET");
        assert_eq!(standard_method(&purge), None);
        assert_eq!(MethodTable::standard().index(&Method::PATCH), 8);
    }
}
