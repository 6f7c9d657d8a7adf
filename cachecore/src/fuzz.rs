//! Entry points for the fuzz targets (`fuzz/`) into parsers that are not public API: the AWS
//! profile files and the Nix daemon's worker protocol. Compiled only under `--cfg fuzzing`
//! (set by cargo-fuzz), so nothing here is part of the library.

/// Profile `name` from the contents of `~/.aws/credentials` and `~/.aws/config` (`None`: that
/// file does not exist): `Ok(Some(key id))` when the profile is there, or the error.
pub fn aws_profile(
    credentials: Option<&str>,
    config: Option<&str>,
    name: &str,
) -> Result<Option<Option<String>>, String> {
    crate::store::fuzz_aws_profile(credentials, config, name)
}

/// One whole conversation with a "daemon" that says `peer`; panics on a broken invariant.
pub fn daemon_conversation(peer: &[u8]) {
    crate::local_store::fuzz_daemon_conversation(peer)
}
