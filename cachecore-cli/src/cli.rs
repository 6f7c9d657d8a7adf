//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Tools for Nix binary caches: NAR archives, store paths and signing keys.
#[derive(Debug, Parser)]
#[command(name = "cachecore", version, about, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Pack, unpack, list, read and hash Nix archives (NAR).
    #[command(subcommand)]
    Nar(NarCommand),
    /// Generate ed25519 signing keys in Nix's format, or derive public keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Print the store path `nix-store --add PATH` would give PATH.
    StorePath {
        /// The file or directory to name.
        path: PathBuf,
        /// Name of the store path (default: PATH's file name).
        #[arg(long)]
        name: Option<String>,
        /// The store directory.
        #[arg(long, default_value = cachecore::store_path::DEFAULT_STORE_DIR, value_name = "DIR")]
        store_dir: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum NarCommand {
    /// Write the NAR of PATH to stdout (the same bytes as `nix-store --dump PATH`).
    Pack {
        /// File, symlink or directory to archive.
        path: PathBuf,
    },
    /// Read a NAR from stdin and unpack it at DEST, which must not exist yet.
    ///
    /// Nothing is left behind if the NAR is invalid: the tree is built beside DEST and renamed
    /// into place only when complete.
    Unpack {
        /// Where to create the unpacked tree.
        dest: PathBuf,
    },
    /// List the contents of a NAR file.
    Ls {
        /// The NAR file (`-` for stdin).
        nar: PathBuf,
        /// Print the listing Nix writes as `<hash>.ls` (JSON with `narOffset`).
        #[arg(long)]
        json: bool,
    },
    /// Print one file from a NAR file.
    Cat {
        /// The NAR file (`-` for stdin).
        nar: PathBuf,
        /// Path of a regular file inside the archive, e.g. `bin/hello`.
        subpath: String,
    },
    /// Print the sha256 of PATH's NAR as `sha256:<nix32>`, like `nix-hash --type sha256 --base32 PATH`.
    Hash {
        /// File, symlink or directory to hash.
        path: PathBuf,
        /// Print only the digest, without the `sha256:` prefix, exactly as `nix-hash` does.
        #[arg(long)]
        bare: bool,
        /// Also print the NAR size in bytes after the hash.
        #[arg(long)]
        size: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a secret key NAME:base64 (the format of `nix key generate-secret`).
    ///
    /// The secret key goes to --out (created with mode 0600) or stdout; the public key is printed
    /// on stderr.
    Generate {
        /// Key name, conventionally `<cache host>-<number>`, e.g. `cache.example.org-1`.
        name: String,
        /// Write the secret key to this file instead of stdout. Refuses to overwrite.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Print the public key of a secret key (read from SECRET_FILE, or stdin when absent).
    Public {
        /// File holding the secret key.
        secret_file: Option<PathBuf>,
    },
}
