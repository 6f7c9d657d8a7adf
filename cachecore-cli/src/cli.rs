//! Command-line arguments.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// What a STORE argument is, shown in every subcommand's --help.
const STORE_HELP: &str = "The binary cache: a directory (./cache, /srv/cache, file:///srv/cache), \
s3://bucket[/prefix]?endpoint=http://host:port&region=R[&profile=P], gs://bucket, az://container, \
memory://, or an http(s):// cache (a `cachecore serve` takes uploads, and private reads, with its \
token: --token-file FILE or CACHECORE_TOKEN; a plain HTTP cache is read-only). Nix's settings go in the query: secret-key=FILE, \
compression=, compression-level=, write-nar-listing=, parallel-compression=, want-mass-query=, \
priority= (options given here override them), and narinfo-compression=, ls-compression=, \
log-compression= (zstd|br|xz|bzip2: stored with Content-Encoding; not on a local directory)";

/// What a store path argument is.
const PATH_HELP: &str =
    "A store path (/nix/store/<hash>-<name>), a symlink to one such as ./result, \
a path inside one, or a base name <hash>-<name>";

/// Nix binary caches on any object store: push closures, copy, pull, verify; NAR archives,
/// store paths and signing keys.
///
/// STORE is a directory (`./cache`, `/srv/cache`, `file:///srv/cache`), `s3://bucket?endpoint=…&region=…&profile=…`,
/// `gs://bucket`, `az://container`, `memory://`, or an `http(s)://` binary cache: a `cachecore
/// serve` takes uploads with its token (`--token-file FILE` or `CACHECORE_TOKEN`); a plain HTTP
/// cache is read-only.
#[derive(Debug, Parser)]
#[command(
    name = "cachecore",
    version,
    about,
    propagate_version = true,
    after_help = crate::exit::HELP
)]
pub struct Cli {
    /// On an error, also print the underlying details (a server's full answer, retries).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create a binary cache: write its `nix-cache-info` (an existing one is left as it is
    /// unless --update is given).
    Init {
        #[arg(help = STORE_HELP)]
        store: String,
        /// Priority Nix gives the cache (lower is preferred; cache.nixos.org is 40). Overrides
        /// the store URL's priority=; default 40.
        #[arg(long)]
        priority: Option<u64>,
        /// Tell Nix not to query many paths at once. Overrides the store URL's want-mass-query=.
        #[arg(long)]
        no_mass_query: bool,
        /// Rewrite an existing nix-cache-info with these settings.
        #[arg(long)]
        update: bool,
        /// File holding the upload token of a `cachecore serve` STORE (as `push --token-file`).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
    },
    /// Upload store paths with their closures; already-present paths are skipped.
    Push(PushArgs),
    /// Copy store paths (with their closures), or everything, from one cache to another.
    ///
    /// Checks everything `pull` checks before an upload completes: each narinfo describes the
    /// path it is stored for; each NAR matches FileSize, FileHash (in its own algorithm), NarSize
    /// and the sha256 NarHash, read no further than those sizes. A failed check leaves nothing
    /// of that path in TO. Objects are written under cachecore's own keys
    /// (`nar/<sha256 of the file>.nar<ext>`, `<hash>.ls` built from the checked NAR), never
    /// where the source's `URL:` points.
    Copy {
        /// The binary cache to copy from (a STORE, as for the other commands).
        from: String,
        /// The binary cache to copy to (a STORE: a directory, s3://…, gs://, az://; Nix's
        /// settings in its query).
        to: String,
        /// Store paths to copy with their closures: store paths, symlinks to them such as
        /// ./result, or base names `<hash>-<name>`.
        paths: Vec<String>,
        /// Copy every path in FROM.
        #[arg(long, conflicts_with = "paths")]
        all: bool,
        /// Re-compress NARs with this method instead of copying objects as they are.
        #[arg(long, value_name = "METHOD")]
        recompress: Option<cachecore::compression::Compression>,
        /// Compression level for --recompress.
        #[arg(long, requires = "recompress")]
        level: Option<i32>,
        /// Objects copied at once.
        #[arg(long, short, default_value_t = 4)]
        jobs: usize,
        /// Copy only paths signed by this public key `name:base64`, or by a key in this file
        /// (repeatable); a path without such a signature stops the copy before anything is
        /// written.
        #[arg(long = "trusted-key", value_name = "KEY")]
        trusted_keys: Vec<String>,
        /// File holding the token of FROM, a `cachecore serve` whose reads are private (as for
        /// the other commands that read).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        /// File holding the upload token of TO, a `cachecore serve` (as `push --token-file`).
        #[arg(long, value_name = "FILE")]
        to_token_file: Option<PathBuf>,
        #[command(flatten)]
        encodings: EncodingArgs,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Download one store path, check its hashes and signature, and unpack it at DEST.
    ///
    /// Checks: the narinfo describes PATH (its StorePath, in the cache's store directory), is
    /// signed by a --trusted-key, and the NAR matches FileSize, FileHash (in its own algorithm),
    /// NarSize and the sha256 NarHash; reading stops as soon as more bytes arrive than the
    /// narinfo declares. The tree is unpacked beside DEST and moved there only after every
    /// check passed; an existing DEST (even one that appears during the pull) is never
    /// replaced.
    Pull {
        #[arg(help = STORE_HELP)]
        store: String,
        #[arg(help = PATH_HELP)]
        path: String,
        /// Where to unpack it (must not exist).
        dest: PathBuf,
        /// A trusted public key: the key `name:base64` itself, or a public key file (one key per
        /// line; blank lines and `#` comments allowed). Repeatable. A secret key is refused.
        #[arg(long = "trusted-key", value_name = "KEY")]
        trusted_keys: Vec<String>,
        /// Do not require a signature by a trusted key.
        #[arg(long)]
        no_check_sigs: bool,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Check signatures, sizes and hashes of NARs and closure completeness; exit 1 if anything
    /// is wrong, 3 if the store could not be read.
    ///
    /// For every narinfo: it parses, describes the path it is stored for, is signed by a
    /// --trusted-key (when given), its references have narinfos, and its NAR matches FileSize,
    /// FileHash (in its own algorithm), NarSize and the sha256 NarHash (read no further than
    /// those sizes). Leftovers of killed uploads are reported too, without failing.
    Verify {
        #[arg(help = STORE_HELP)]
        store: String,
        /// Store paths to check with their closures (default: every path in the cache): store
        /// paths, symlinks to them such as ./result, or base names.
        paths: Vec<String>,
        /// A trusted public key: the key `name:base64` itself, or a public key file (one key per
        /// line; blank lines and `#` comments allowed). Repeatable. When given, every narinfo
        /// must be signed by one of them, and a clean result ends with the nix.conf lines that
        /// make Nix use the cache.
        #[arg(long = "trusted-key", value_name = "KEY")]
        trusted_keys: Vec<String>,
        /// NARs checked at once.
        #[arg(long, short, default_value_t = 4)]
        jobs: usize,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// List the cache's store paths, or the contents of PATH[/SUB].
    ///
    /// Every narinfo read must describe the path it is stored for. The contents come from the
    /// path's `.ls` listing, which no hash or signature covers (the cache's word); without one,
    /// from the NAR, checked against the narinfo.
    Ls {
        #[arg(help = STORE_HELP)]
        store: String,
        /// A store path or a path inside one (`./result/bin`, `/nix/store/<hash>-<name>/bin`,
        /// `<hash>-<name>/bin`).
        path: Option<String>,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Print one file of a store path in the cache.
    ///
    /// By default, reads only the path's narinfo, its listing and the part of its NAR that holds
    /// the file (ranged reads; for a NAR pushed by cachecore, a few MiB at most). Such a read
    /// checks the narinfo against PATH and the sizes it gives, but cannot check the NarHash.
    ///
    /// With --verify or --trusted-key, prints nothing that was not checked: the narinfo must
    /// describe PATH (and, with --trusted-key, be signed by one of the keys), and the whole NAR is
    /// read and checked against FileSize, FileHash, NarSize and the sha256 NarHash while the file
    /// is held in an unlinked temporary file (at most NarSize bytes); it reaches stdout only once
    /// every check passed.
    Cat {
        #[arg(help = STORE_HELP)]
        store: String,
        /// A file inside a store path: `./result/bin/hello`, `/nix/store/<hash>-<name>/bin/hello`
        /// or `<hash>-<name>/bin/hello`.
        path: String,
        /// Require a signature by this public key `name:base64`, or by a key in this file
        /// (repeatable).
        #[arg(long = "trusted-key", value_name = "KEY")]
        trusted_keys: Vec<String>,
        /// Read and check the whole NAR (FileHash, FileSize, NarHash, NarSize) before printing
        /// the file, as a download by Nix would. With --trusted-key and without --verify, a
        /// path pushed with signed frame digests has only the frames holding the file read,
        /// each checked against its signed digest; any other path is read whole and checked.
        #[arg(long)]
        verify: bool,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Print the cache's nix-cache-info and totals (and leftovers of killed uploads).
    ///
    /// Narinfos are identity-checked and sizes added with overflow checks; NARs are not read.
    Info {
        #[arg(help = STORE_HELP)]
        store: String,
        #[command(flatten)]
        token: TokenArgs,
    },
    /// Serve the cache over HTTP: reads for Nix, uploads with `nix copy --to http://…`.
    Serve(Box<ServeArgs>),
    /// Mount the cache read-only at MOUNTPOINT (FUSE): its store paths as `<hash>-<name>`
    /// directories, fetching only the bytes a reader touches.
    ///
    /// Runs in the foreground until unmounted: Ctrl-C, SIGTERM or `fusermount3 -u MOUNTPOINT`.
    /// A store path appears only when its narinfo is signed by a --trusted-key (or with
    /// --no-check-sigs). A cache that cannot be listed (plain http://) shows the paths that were
    /// looked up by name (`ls MOUNTPOINT/<hash>-<name>`). Listing directories reads the `.ls`
    /// listings, never NARs. A read that fails (the store unreachable, a NAR that fails a check)
    /// fails with EIO and one log line on stderr; the mount stays up.
    #[cfg(all(feature = "mount", target_os = "linux"))]
    Mount(MountArgs),
    /// Add, remove, list and restore GC roots: objects in the cache (`gcroots/<host>/<name>`)
    /// naming store paths that `cachecore gc` keeps, with their closures.
    #[command(subcommand)]
    Roots(RootsCommand),
    /// Delete what no GC root keeps, never breaking a closure.
    ///
    /// Live: the closures of the paths the roots name (`cachecore roots list`), and with
    /// --older-than, of the paths pushed more recently. The rest is garbage: its narinfos are
    /// deleted first, referrers before what they reference, so every narinfo still visible has
    /// its NAR and its whole closure at every moment, even if gc is killed. Their NARs, listings
    /// and logs (unless a remaining narinfo names them: NARs can be shared) are recorded in a
    /// tombstone (`.cachecore/gc/…`) and deleted by a gc run after --grace, so clients that read
    /// a narinfo just before still get its NAR. NARs and listings no narinfo names (killed
    /// pushes) go once older than --failed-uploads-older-than. A narinfo that does not parse is
    /// reported and kept; a root that does not parse stops gc before anything is deleted.
    ///
    /// Reads the push index (`cachecore index`) and the narinfos it does not cover. Realisations
    /// are never deleted. Abandoned
    /// multipart uploads cannot be listed: set the bucket lifecycle rule
    /// AbortIncompleteMultipartUpload (S3 and Garage). Prints one summary line (--json: every
    /// object); exits 1 if a delete failed.
    Gc(GcArgs),
    /// The push index (`index/…`): what push, copy, serve and the proxy published, so that gc,
    /// ls and mounts need not read every narinfo. An optimisation only: deleting it loses
    /// nothing.
    #[command(subcommand)]
    Index(IndexCommand),
    /// Pack, unpack, list, read and hash Nix archives (NAR).
    #[command(subcommand)]
    Nar(NarCommand),
    /// Generate ed25519 signing keys in Nix's format, or derive public keys.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Add a signature to narinfos already in the cache (as `nix store sign --store` does): for
    /// paths pushed unsigned, or to add a new key before the old one is retired.
    ///
    /// Signs PATHS and their closures, or every path with --all. A narinfo that carries this
    /// key's signature already is left as it is, so running it again changes nothing. Through
    /// a `cachecore serve`, the token must allow signing (its --token-file, or a scoped token
    /// with `--can sign`), and the key must be one the server announces (`serve --public-key`);
    /// the server adds the signatures and changes nothing else.
    Sign {
        #[arg(help = STORE_HELP)]
        store: String,
        /// Store paths to sign with their closures: store paths, symlinks to them such as
        /// ./result, or base names.
        #[arg(required_unless_present = "all")]
        paths: Vec<String>,
        /// Sign every path in the cache.
        #[arg(long, conflicts_with = "paths")]
        all: bool,
        /// Secret key file to sign with (as `push --key` takes it).
        #[arg(long, value_name = "SECRET_FILE")]
        key: PathBuf,
        /// Narinfos written at once.
        #[arg(long, short, default_value_t = 8)]
        jobs: usize,
        /// File holding the token of a `cachecore serve` STORE (as `push --token-file`).
        #[arg(long, value_name = "FILE")]
        token_file: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Scoped tokens for `cachecore serve --token-secret`: one per CI job, person or proxy,
    /// each with its own rights and expiry, revocable alone.
    #[command(subcommand)]
    Token(TokenCommand),
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

/// What --host means, for every roots subcommand.
const HOST_HELP: &str = "The machine the root belongs to (default: this machine's host name)";

#[derive(Debug, Subcommand)]
pub enum RootsCommand {
    /// Root store paths under NAME: `cachecore gc` keeps them and their closures.
    ///
    /// NAME may hold `/` (`per-user/alice/profile`); it is escaped into one key segment. Without
    /// --keep the root is replaced; with --keep N, NAME is a series: the paths become its newest
    /// revision and its last N revisions stay rooted.
    Add {
        #[arg(help = STORE_HELP)]
        store: String,
        /// The root's name.
        name: String,
        /// Store paths to keep (store paths, symlinks to them such as ./result, or base names).
        #[arg(required = true)]
        paths: Vec<String>,
        #[arg(long, help = HOST_HELP)]
        host: Option<String>,
        /// Keep the last N revisions of NAME (a series).
        #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
        keep: Option<u64>,
        /// The cache's store directory.
        #[arg(long, default_value = cachecore::store_path::DEFAULT_STORE_DIR, value_name = "DIR")]
        store_dir: String,
    },
    /// Publish this machine's Nix GC roots as the host's roots: every symbolic link under
    /// --gcroots-dir (profiles and auto/ included), followed to its store path, named by its
    /// path there. Roots of the host that no longer exist locally move to the trash, with the
    /// time they left.
    Sync {
        #[arg(help = STORE_HELP)]
        store: String,
        #[arg(long, help = HOST_HELP)]
        host: Option<String>,
        /// Where Nix keeps its GC roots.
        #[arg(long, default_value = "/nix/var/nix/gcroots", value_name = "DIR")]
        gcroots_dir: PathBuf,
        /// Push the roots' closures first (from the local Nix store, with the store URL's
        /// settings).
        #[arg(long)]
        push: bool,
        /// Keep running, and sync again whenever a root appears, vanishes or changes (inotify
        /// on the GC roots directory and every directory a root's links pass through). Ctrl-C
        /// stops it.
        #[arg(long)]
        watch: bool,
        /// The cache's store directory.
        #[arg(long, default_value = cachecore::store_path::DEFAULT_STORE_DIR, value_name = "DIR")]
        store_dir: String,
    },
    /// Move a root to the trash (`gctrash/<host>/<name>`), with the time it left; `roots
    /// restore` brings it back. `gc --only-trashed` deletes only what trashed roots reach.
    Remove {
        #[arg(help = STORE_HELP)]
        store: String,
        /// The root's name.
        name: String,
        #[arg(long, help = HOST_HELP)]
        host: Option<String>,
    },
    /// Bring a trashed root back.
    Restore {
        #[arg(help = STORE_HELP)]
        store: String,
        /// The root's name.
        name: String,
        #[arg(long, help = HOST_HELP)]
        host: Option<String>,
    },
    /// List the roots of every host (and the trashed ones): `host name path…` per line.
    List {
        #[arg(help = STORE_HELP)]
        store: String,
        /// Print JSON: one object per root, with its revisions.
        #[arg(long)]
        json: bool,
    },
}

/// How `mount` checks what it serves.
#[cfg(all(feature = "mount", target_os = "linux"))]
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum MountCheck {
    /// Read only the frames of a file, each checked against its digest signed by a trusted key
    /// (`cachecore push` with a signing key writes them for NARs of more than one frame), and a
    /// path's listing against its signed hash; a path without signed frame digests is read as
    /// with `nar`.
    Frames,
    /// Fetch a path's whole NAR once, check it against the signed NarHash, keep it in
    /// --cache-dir and serve every read from it; the path's listing must describe that NAR
    /// before any of its contents are served.
    Nar,
}

#[cfg(all(feature = "mount", target_os = "linux"))]
#[derive(Debug, clap::Args)]
pub struct MountArgs {
    #[arg(help = STORE_HELP)]
    pub store: String,
    /// An existing empty directory to mount the cache on.
    pub mountpoint: PathBuf,
    /// A trusted public key: the key `name:base64` itself, or a public key file (one key per
    /// line; blank lines and `#` comments allowed). Repeatable. Only paths signed by one of
    /// them appear.
    #[arg(long = "trusted-key", value_name = "KEY")]
    pub trusted_keys: Vec<String>,
    /// Show every path, signed or not. Without --check, reads are then ranged reads of the
    /// covering frames, checked only against the narinfo's sizes and the frames' checksums
    /// (what `cachecore cat` does without --verify), not against the NarHash.
    #[arg(long)]
    pub no_check_sigs: bool,
    /// How reads are checked (default: frames with --trusted-key).
    #[arg(long, value_enum, value_name = "HOW")]
    pub check: Option<MountCheck>,
    /// Where fetched NARs, and frames checked against signed digests, are kept across mounts
    /// (default: $XDG_CACHE_HOME/cachecore/nars, or ~/.cache/cachecore/nars).
    #[arg(long, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Most bytes kept in --cache-dir; the least recently used NARs and frames are deleted
    /// beyond it.
    #[arg(long, default_value_t = 8 << 30, value_name = "BYTES")]
    pub cache_size: u64,
    /// Most bytes of decompressed frames kept in memory.
    #[arg(long, default_value_t = 256 << 20, value_name = "BYTES")]
    pub memory: u64,
}

#[derive(Debug, clap::Args)]
pub struct GcArgs {
    #[arg(help = STORE_HELP)]
    pub store: String,
    /// Also keep paths pushed within this long (e.g. 30d, 6h; units s m h d w), with their
    /// closures.
    #[arg(long, value_name = "DURATION", value_parser = cachecore::gc::parse_duration)]
    pub older_than: Option<std::time::Duration>,
    /// Also keep paths pushed or read within this long, with their closures (reads as
    /// recorded by `serve --record-access`).
    #[arg(long, value_name = "DURATION", value_parser = cachecore::gc::parse_duration)]
    pub unused_for: Option<std::time::Duration>,
    /// How long the NARs, listings and logs of deleted narinfos stay before a later gc run
    /// deletes them.
    #[arg(long, value_name = "DURATION", default_value = "2d", value_parser = cachecore::gc::parse_duration)]
    pub grace: std::time::Duration,
    /// No grace: delete NARs in this run, right after their narinfos. Only for caches with no
    /// readers or writers at the time.
    #[arg(long)]
    pub force: bool,
    /// Delete only what trashed roots (`roots remove`) reach and nothing else keeps; paths no
    /// root ever named are left alone.
    #[arg(long)]
    pub only_trashed: bool,
    /// Delete NARs and listings that no narinfo names (left by killed pushes) once older than
    /// this.
    #[arg(long, value_name = "DURATION", default_value = "1d", value_parser = cachecore::gc::parse_duration)]
    pub failed_uploads_older_than: std::time::Duration,
    /// Print what would be deleted (counts and bytes; with --json every object); delete nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the report as JSON (every object) instead of one line.
    #[arg(long)]
    pub json: bool,
    /// Print what the run would do with this store path and what keeps it: the GC root or
    /// lease naming it (or the path whose closure holds it, and the references in between),
    /// or --older-than, --unused-for, --max-size. Repeatable; implies --dry-run.
    #[arg(long, value_name = "PATH", conflicts_with = "json")]
    pub why: Vec<String>,
    /// Run even with no root and no --older-than, when everything is garbage.
    #[arg(long)]
    pub allow_empty_roots: bool,
    /// Keep the most recently pushed unrooted paths whose NARs fit, with the rooted ones', in
    /// this size (e.g. 500G; units K M G T); evict the rest oldest first, never a path a kept
    /// path refers to.
    #[arg(long, value_name = "SIZE", value_parser = cachecore::gc::parse_size)]
    pub max_size: Option<u64>,
    /// Delete narinfos that do not parse (kept and reported otherwise), unless a live path
    /// refers to them.
    #[arg(long)]
    pub delete_unparseable: bool,
    /// The store directory the cache must be for (its nix-cache-info's StoreDir).
    #[arg(long, default_value = cachecore::store_path::DEFAULT_STORE_DIR, value_name = "DIR")]
    pub store_dir: String,
    /// Narinfos read at once, and listing requests at once (on S3, GCS and Azure the keys are
    /// listed in ranges side by side).
    #[arg(long, short, default_value_t = 16)]
    pub jobs: usize,
}

#[derive(Debug, Subcommand)]
pub enum IndexCommand {
    /// Rebuild the index from the narinfos (every narinfo read once): one new index object,
    /// then the old ones deleted. For caches written by plain `nix copy`, or a damaged index.
    Rebuild {
        #[arg(help = STORE_HELP)]
        store: String,
        /// Narinfos read at once.
        #[arg(long, short, default_value_t = 16)]
        jobs: usize,
    },
    /// Merge the index objects into one (narinfos the index does not cover read once), then
    /// delete the objects merged.
    Compact {
        #[arg(help = STORE_HELP)]
        store: String,
        /// Narinfos read at once.
        #[arg(long, short, default_value_t = 16)]
        jobs: usize,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Generate a secret key NAME:base64 (the format of `nix key generate-secret`).
    ///
    /// The secret key goes to --out (created with mode 0600) or stdout; the public key is printed
    /// on stderr (`cachecore key public FILE` prints it again later).
    Generate {
        /// Key name, conventionally `<cache host>-<number>`, e.g. `cache.example.org-1`. No spaces,
        /// no `:`.
        name: String,
        /// Write the secret key to this file instead of stdout. Refuses to overwrite.
        #[arg(long, short)]
        out: Option<PathBuf>,
    },
    /// Print the public key of a secret key (read from SECRET_FILE, or stdin when absent).
    Public {
        /// File holding the secret key (one key line; blank lines and `#` comments allowed).
        secret_file: Option<PathBuf>,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Write a new token secret (32 random bytes, base64) to --out, created with mode 0600:
    /// the file `serve --token-secret` and `token issue --secret` read.
    Secret {
        /// The file to create (never overwritten).
        #[arg(long, short, value_name = "FILE")]
        out: PathBuf,
    },
    /// Issue a token signed with the server's secret; prints it on stdout (and its id, rights
    /// and expiry on stderr). Give it to its holder as a --token-file, CACHECORE_TOKEN, or the
    /// password of a netrc line for `nix copy`.
    Issue {
        /// The secret file of the servers that are to accept it (`serve --token-secret`).
        #[arg(long, value_name = "FILE")]
        secret: PathBuf,
        /// Who holds it (`ci-frontend`, `alice`): shown in refusals, and revocable by name.
        #[arg(long)]
        name: String,
        /// What it may do besides reading: read, push (upload), sign (add signatures to
        /// narinfos already in the cache). Repeatable, or comma-separated.
        #[arg(long, value_name = "RIGHT", required = true, value_delimiter = ',')]
        can: Vec<cachecore::server::Right>,
        /// Only servers whose STORE (as given to `serve`, without its ?query) starts with this
        /// accept it, e.g. s3://nix-caches/team-a/ for the servers of one team's cache.
        #[arg(long, value_name = "STORE_PREFIX")]
        prefix: Option<String>,
        /// How long it is valid: 30d, 12h, 2w (units s m h d w).
        #[arg(long, value_name = "DURATION", value_parser = cachecore::gc::parse_duration)]
        expires: std::time::Duration,
    },
}

#[derive(Debug, clap::Args)]
pub struct PushArgs {
    #[arg(help = STORE_HELP)]
    pub store: String,
    /// Store paths, symlinks to them such as `./result`, or paths inside them.
    #[arg(required_unless_present = "add")]
    pub paths: Vec<PathBuf>,
    /// Push this directory as the content-addressed path `nix-store --add` would give it (no Nix
    /// needed).
    #[arg(long, value_name = "DIR", conflicts_with = "paths")]
    pub add: Option<PathBuf>,
    /// Name of the --add path (default: the directory's name).
    #[arg(long, requires = "add")]
    pub name: Option<String>,
    /// Secret key file to sign narinfos with (repeatable): a file holding one secret key line,
    /// as `cachecore key generate --out` or `nix key generate-secret` writes it (blank lines and
    /// `#` comments allowed). The file's name, not the key itself: a key on the command line is
    /// visible to every user of the machine, and is refused. Replaces the store URL's
    /// secret-key=FILE.
    #[arg(long = "key", value_name = "SECRET_FILE")]
    pub keys: Vec<PathBuf>,
    /// File holding the upload token of a `cachecore serve` STORE (`http(s)://HOST:PORT`), as
    /// its --token-file: the push goes through the server, which holds the bucket credentials
    /// (and may sign, with `serve --key`). The same as CACHECORE_TOKEN in the environment.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Large NARs (over 4 MiB) uploaded at once; up to 4 × JOBS small ones go alongside.
    #[arg(long, short, default_value_t = 4)]
    pub jobs: usize,
    /// zstd, xz, br or none. Overrides the store URL's compression=; default zstd.
    #[arg(long, value_name = "METHOD")]
    pub compression: Option<cachecore::compression::Compression>,
    /// Compression level. Overrides the store URL's compression-level=; default the codec's,
    /// as Nix.
    #[arg(long)]
    pub level: Option<i32>,
    /// Push only the named paths; their references must already be in the cache.
    #[arg(long)]
    pub no_closure: bool,
    /// Also upload the build logs of the paths' derivations.
    #[arg(long)]
    pub logs: bool,
    /// Store the build logs of --logs compressed with METHOD (zstd, br, xz, bzip2 or none), as
    /// the store URL's log-compression=; refused on a local directory, like the two above.
    #[arg(long, value_name = "METHOD")]
    pub log_compression: Option<cachecore::compression::Compression>,
    /// Do not write `<hash>.ls` listings. Overrides the store URL's write-nar-listing=.
    #[arg(long)]
    pub no_listing: bool,
    /// Check the paths already in the cache (their NAR against their narinfo) and push again
    /// those that fail.
    #[arg(long)]
    pub repair: bool,
    #[command(flatten)]
    pub encodings: EncodingArgs,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// How the small objects written are stored: compressed, with the method as their
/// `Content-Encoding` (which Nix, CDNs and `cachecore serve` hand on). Each overrides the store
/// URL's setting of the same name; refused on a local directory, whose files Nix reads raw.
#[derive(Debug, Default, clap::Args)]
pub struct EncodingArgs {
    /// Store narinfos compressed with METHOD (zstd, br, xz, bzip2 or none), as the store URL's
    /// narinfo-compression=.
    #[arg(long, value_name = "METHOD")]
    pub narinfo_compression: Option<cachecore::compression::Compression>,
    /// Store `.ls` listings compressed with METHOD, as the store URL's ls-compression=.
    #[arg(long, value_name = "METHOD")]
    pub ls_compression: Option<cachecore::compression::Compression>,
}

/// The token of a `cachecore serve` that a command reading it passes on.
#[derive(Debug, clap::Args)]
pub struct TokenArgs {
    /// File holding the token of a `cachecore serve` STORE (`http(s)://HOST:PORT`) whose reads
    /// are private: its --read-token-file (or its upload token, which grants reads too). The
    /// same as CACHECORE_TOKEN in the environment.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct OutputArgs {
    /// Print nothing but errors.
    #[arg(long, short)]
    pub quiet: bool,
}

/// `cachecore serve`.
///
/// Serves STORE as a Nix binary cache over HTTP: GET/HEAD of every object (ranges, ETag, 304),
/// uploads by PUT with the token of --token-file (as `nix copy --to http://HOST:PORT` sends them,
/// with the token as the netrc password), each checked before it becomes visible. `/` is a
/// landing page, `/metrics` Prometheus text, `/health` a health check. Prints the address it
/// listens on; stops on SIGINT/SIGTERM after open requests finish.
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The binary cache to serve, which must exist (`cachecore init` creates one): a directory,
    /// s3://bucket[/prefix]?endpoint=…&region=…, gs://bucket, az://container, or another
    /// http(s):// cache.
    pub store: String,
    /// Address to listen on: `127.0.0.1:8080`, `[::]:8080`, or a host name and port
    /// (`localhost:8080`, every address it has). Repeatable; port 0 picks a free port. Default
    /// 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    pub listen: Vec<String>,
    /// File holding the token uploads need (bearer token, or basic-auth password as Nix sends
    /// from netrc). Without it, uploads are refused.
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// File holding a token that reads need too (the upload token also grants reads).
    #[arg(long, value_name = "FILE")]
    pub read_token_file: Option<PathBuf>,
    /// File holding the secret of scoped tokens (`cachecore token secret` makes one, `cachecore
    /// token issue` issues tokens with it): each token grants what it names (read, push,
    /// sign) until it expires, checked without any state, so replicas given the same file
    /// accept the same tokens. --token-file and --read-token-file keep working beside it.
    #[arg(long, value_name = "FILE")]
    pub token_secret: Option<PathBuf>,
    /// File listing revoked scoped tokens, by id or name, one a line (`#` comments allowed);
    /// read again within a second of a change.
    #[arg(long, value_name = "FILE", requires = "token_secret")]
    pub revoked_tokens: Option<PathBuf>,
    /// Reads need a token too: a scoped one, or the upload token (as with --read-token-file,
    /// without a shared read token).
    #[arg(long)]
    pub private_reads: bool,
    /// A public key `name:base64` (or a file holding one) to show on the landing page
    /// (repeatable).
    #[arg(long = "public-key", value_name = "KEY")]
    pub public_keys: Vec<String>,
    /// Secret key file to sign every uploaded narinfo with (as `push --key` takes it), so that
    /// machines that push hold no signing key. Its public key is shown on the landing page.
    #[arg(long, value_name = "SECRET_FILE")]
    pub key: Option<PathBuf>,
    /// The cache's name, shown as the landing page's title (default "Nix binary cache").
    #[arg(long, value_name = "TEXT")]
    pub title: Option<String>,
    /// Priority announced in nix-cache-info (default: the stored one).
    #[arg(long)]
    pub priority: Option<u64>,
    /// Largest NAR upload: bytes, or with a unit K, M, G, T (powers of 1024; `16G`, `512MiB`).
    #[arg(long, default_value = "16G", value_name = "SIZE", value_parser = parse_size)]
    pub max_upload_size: u64,
    /// Uploads processed at once (more wait).
    #[arg(long, default_value_t = 8, value_name = "N")]
    pub upload_jobs: usize,
    /// Take every upload's bytes here, even on an S3 store (by default `cachecore push` is
    /// given presigned URLs and sends large NARs straight to the bucket, falling back to this
    /// server when it cannot connect to the bucket).
    #[arg(long)]
    pub no_direct_uploads: bool,
    /// Seconds an upload may send nothing before it is abandoned.
    #[arg(long, default_value_t = 60, value_name = "SECONDS")]
    pub upload_timeout: u64,
    /// A cache to fill this one from when a client asks for a path it lacks (pull-through
    /// proxy; repeatable, asked in order). The path is copied with its whole closure, every
    /// signature and NAR checked, before it is served. Needs --upstream-key.
    #[arg(long = "upstream", value_name = "URL")]
    pub upstreams: Vec<String>,
    /// A public key `name:base64`, or a file of them, that paths from an upstream must be
    /// signed by (repeatable). It applies to the --upstream before it; given before every
    /// --upstream, to all of them.
    #[arg(long = "upstream-key", value_name = "KEY", requires = "upstreams")]
    pub upstream_keys: Vec<String>,
    /// For each of `upstream_keys`, the index of the upstream it belongs to (`None`: all),
    /// from the order of the arguments ([`pair_upstream_keys`]).
    #[arg(skip)]
    pub upstream_key_owners: Vec<Option<usize>>,
    /// Seconds an upstream may take to answer a narinfo lookup before it counts as a miss.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub upstream_timeout: u64,
    /// Seconds a narinfo (any object of at most 64 KiB) read from a remote store is answered
    /// from memory before the store is asked again, as a CDN would (narinfos are served with
    /// max-age=300). Uploads through this server and new paths are seen at once; a narinfo
    /// changed or deleted through another replica, after at most this long. 0: always ask the
    /// store. A local directory's files are checked on every read instead.
    #[arg(long, default_value_t = 10, value_name = "SECONDS")]
    pub remote_read_ttl: u64,
    /// Answer NAR downloads with a redirect to a presigned URL of the NAR in the bucket (valid
    /// for an hour) instead of streaming it, so NAR bytes never pass through this server. S3
    /// stores only; clients must reach the bucket's endpoint. Nix follows redirects.
    #[arg(long)]
    pub redirect_nars: bool,
    /// Record which narinfos this server answers, and when (at most one small object a
    /// minute, `.cachecore/access/…`, written off the request path), so that `gc --max-size`
    /// evicts the least recently used paths and `gc --unused-for` sees reads.
    #[arg(long)]
    pub record_access: bool,
    /// Where /serve/ keeps whole NARs that cannot be read at random (xz, bzip2, zstd without a
    /// seek table), each fetched and checked once, so a file is not decompressed from the
    /// NAR's start for every request (default: a temporary directory removed at exit).
    #[arg(long, value_name = "DIR")]
    pub nar_cache_dir: Option<PathBuf>,
    /// Bytes of NARs kept in --nar-cache-dir; the least recently read go first.
    #[arg(long, default_value_t = 1 << 30, value_name = "BYTES")]
    pub nar_cache_size: u64,
    /// Seconds a connection may have no request in flight before it is closed: before its
    /// first request (a socket that sends nothing, an HTTP/2 connection that only said hello)
    /// and between requests, as nginx's client_header_timeout and keepalive_timeout.
    #[arg(long, default_value_t = 60, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout: u64,
    /// Connections served at once (default: half the open-file limit, `ulimit -n`, at most
    /// 16384). At the cap the longest-idle connection is closed to make room; when every
    /// connection has a request in flight, a new one is answered 503 with Retry-After.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: Option<u64>,
    /// Request log format on stderr (`RUST_LOG` filters it, e.g. `RUST_LOG=warn`).
    #[arg(long, default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

/// Fills [`ServeArgs::upstream_key_owners`] from where each `--upstream-key` stands among the
/// `--upstream`s on the command line (clap's derive keeps values, not their order).
pub fn pair_upstream_keys(cli: &mut Cli, matches: &clap::ArgMatches) {
    let Command::Serve(serve) = &mut cli.command else {
        return;
    };
    let Some(m) = matches.subcommand_matches("serve") else {
        return;
    };
    let upstreams: Vec<usize> = m
        .indices_of("upstreams")
        .map(Iterator::collect)
        .unwrap_or_default();
    serve.upstream_key_owners = m
        .indices_of("upstream_keys")
        .map(|keys| {
            keys.map(|k| upstreams.iter().filter(|&&u| u < k).count().checked_sub(1))
                .collect()
        })
        .unwrap_or_default();
}

/// A size as people write it: `17179869184`, `16G`, `16GiB`, `512M`, `64k` (units are powers of
/// 1024, as in `ulimit` and Nix's own sizes).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size like 16G, 512M or 1048576"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (use K, M, G or T)"
            ))
        }
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| format!("{text:?} is more than 2^64 bytes"))
}
