//! Invariants of the AWS profile files reader (`~/.aws/credentials` and `~/.aws/config`, both
//! untrusted text), for any contents: it never panics; it is deterministic; a profile it finds
//! has its keys only from lines of its own sections (a key id it returns appears in the input);
//! and its errors are one line.
//!
//! Input: credentials, a NUL, config, a NUL, the profile name.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let mut parts = text.splitn(3, '\0');
    let creds = parts.next().unwrap_or("");
    let config = parts.next();
    let name = parts.next().unwrap_or("default");
    let first = cachecore::fuzz::aws_profile(Some(creds), config, name);
    let second = cachecore::fuzz::aws_profile(Some(creds), config, name);
    assert_eq!(first, second, "not deterministic");
    match first {
        Ok(Some(key_id)) => {
            if let Some(id) = key_id {
                assert!(text.contains(id.as_str()), "key id {id:?} is not in the input");
            }
        }
        Ok(None) => {}
        Err(e) => assert!(!e.contains('\n') || name.contains('\n') || text.contains('\n'), "{e}"),
    }
});
