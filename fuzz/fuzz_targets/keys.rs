//! Invariants of key and signature parsing (keys come from files and command lines, signatures
//! from narinfos: untrusted), for any string: parsing never panics; what parses prints back to
//! a string that parses equal; a secret key's public key is a public key that parses; a
//! signature made by a parsed secret key verifies with its public key and no other message.
#![no_main]

use cachecore::signing::{PublicKey, SecretKey, Signature, Signer as _};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(public) = PublicKey::parse(text) {
        let printed = public.to_string();
        assert!(PublicKey::parse(&printed).expect("a printed public key parses") == public);
    }
    if let Ok(sig) = Signature::parse(text) {
        let printed = sig.to_string();
        assert!(Signature::parse(&printed).expect("a printed signature parses") == sig);
    }
    if let Ok(secret) = SecretKey::parse(text) {
        let printed = secret.to_nix_string();
        let again = SecretKey::parse(&printed).expect("a printed secret key parses");
        let public = secret.public_key();
        assert!(again.public_key() == public);
        assert!(PublicKey::parse(&public.to_string()).expect("parses") == public);
        let sig = secret.sign(data);
        assert!(public.verify(data, &sig), "a signature does not verify");
        assert!(!public.verify(b"another message", &sig) || data == b"another message");
    }
});
