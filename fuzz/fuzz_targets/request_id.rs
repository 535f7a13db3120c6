//! Request-id validation: never a panic, and what it accepts is what the README says
//! (1 to 128 bytes of `A-Z a-z 0-9 - _ . : + / = @`), and a valid header value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use towerscope::request_id::is_valid_request_id;

fuzz_target!(|data: &[u8]| {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || b"-_.:+/=@".contains(b);
    let expected = (1..=128).contains(&data.len()) && data.iter().all(allowed);
    assert_eq!(is_valid_request_id(data), expected);
    if expected {
        assert!(http::HeaderValue::from_bytes(data).is_ok());
    }
});
