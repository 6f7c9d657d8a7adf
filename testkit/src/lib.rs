//! What the tests of `cachecore` and `cachecore-cli` share: real parts started per test and
//! stopped on drop, and the generators and comparisons they check results with. Dev-only (a
//! dev-dependency of both crates, never published).
//!
//! - [`nix`]: running real Nix (`nix_command`, `nix`, `nix_ok`, …), the closure derivation of
//!   `TESTING-WITH-REAL-PARTS.md`, `nix copy` to and from binary caches;
//! - [`process`]: running a child with stdin fed and a time limit;
//! - [`tree`]: temporary directories Nix builders can read, fixture trees, tree comparison;
//! - [`data`]: deterministic pseudo-random bytes, byte comparison with a hex dump;
//! - [`nar`]: a NAR builder that writes tokens by hand (for corrupt NARs);
//! - [`wire`]: the Nix daemon's wire words and strings, spelled independently of the library;
//! - [`rss`]: peak memory of a child through GNU time;
//! - [`capture`]: an HTTP listener recording what a client sends (no server behind it);
//! - [`gate`]: an HTTP relay holding the requests a test picks, before the server sees them or
//!   before their answers reach the client, until it lets them go (a barrier at a step a client
//!   shows only on the wire, or the point where a client is killed);
//! - [`scripted`]: an HTTP server whose answers a function makes (a hostile upstream inventing
//!   objects as it is asked for them);
//! - [`net`], [`garage`], [`emulators`], [`http_server`]: servers on loopback (a private Garage,
//!   Azurite, a directory over HTTP with `Range:` support), on ports chosen as [`net`] says.
//!
//! A missing tool (Nix, Garage, python3, GNU time) fails the test with the command that installs
//! it; nothing here skips.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_debug_implementations
)]

pub mod capture;
pub mod data;
pub mod emulators;
pub mod garage;
pub mod gate;
pub mod http_server;
pub mod nar;
pub mod net;
pub mod nix;
pub mod process;
pub mod rss;
pub mod scripted;
pub mod tree;
pub mod wire;

pub use data::*;
pub use nar::*;
pub use net::{free_port, random_hex32, wait_for_port};
pub use nix::*;
pub use process::*;
pub use rss::*;
pub use tree::*;
