//! Running real Nix (which must be installed: a missing `nix` fails the test, it never skips
//! it), the closure derivation of `TESTING-WITH-REAL-PARTS.md`, and `nix copy` to and from
//! binary caches.

use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::process::{collect_with_timeout, describe, DEFAULT_LIMIT};
use crate::tree::path_str;

/// A command for one of Nix's programs (`nix`, `nix-store`, `nix-hash`, `nix-build`), with
/// `NIX_REMOTE=local` (single-user store, no daemon). `nix` gets `nix-command` enabled.
pub fn nix_command(program: &str) -> Command {
    let mut cmd = Command::new(program);
    cmd.env("NIX_REMOTE", "local");
    if program == "nix" {
        cmd.args(["--extra-experimental-features", "nix-command"]);
    }
    cmd
}

/// The message for a Nix program that cannot be found.
pub fn nix_missing(program: &str, e: &io::Error) -> String {
    format!(
        "these tests need real Nix, but `{program}` was not found on PATH ({e}); \
         install it with `apt-get install -y nix-bin` (Debian's Nix 2.8)"
    )
}

/// Runs `cmd` (a Nix program) with `stdin` and returns its output, whatever its exit status.
/// Panics with a clear message when the program is not installed: these tests need real Nix.
pub fn nix_output(cmd: &mut Command, stdin: &[u8]) -> Output {
    let what = describe(cmd);
    let mut child = match cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(child) => child,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            panic!("{}", nix_missing(&cmd.get_program().to_string_lossy(), &e))
        }
        Err(e) => panic!("cannot run `{what}`: {e}"),
    };
    collect_with_timeout(&mut child, stdin, &what, DEFAULT_LIMIT)
}

/// Runs a Nix program that must succeed; returns its stdout.
pub fn nix_ok(cmd: &mut Command, stdin: &[u8]) -> Vec<u8> {
    let what = describe(cmd);
    let out = nix_output(cmd, stdin);
    assert!(
        out.status.success(),
        "`{what}` failed ({}):\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// `nix_ok` for a program and its arguments, returning stdout as a string without the final
/// newline.
pub fn nix(program: &str, args: &[&str]) -> String {
    let out = nix_ok(nix_command(program).args(args), b"");
    String::from_utf8(out)
        .expect("Nix printed non-UTF-8")
        .trim_end_matches('\n')
        .to_owned()
}

/// `nix-store --dump PATH`.
pub fn nix_dump(path: &Path) -> Vec<u8> {
    nix_ok(nix_command("nix-store").arg("--dump").arg(path), b"")
}

/// `nix-hash --type sha256 --base32 PATH`.
pub fn nix_hash(path: &Path) -> String {
    nix(
        "nix-hash",
        &["--type", "sha256", "--base32", path_str(path)],
    )
}

/// `nix-store --add PATH` (really adds the path to /nix/store).
pub fn nix_store_add(path: &Path) -> String {
    nix("nix-store", &["--add", path_str(path)])
}

/// `nix key generate-secret --key-name NAME`, written to `dir/NAME.sk`; returns (secret file,
/// public key).
pub fn nix_generate_key(dir: &Path, name: &str) -> (PathBuf, String) {
    let secret = nix_ok(
        nix_command("nix").args(["key", "generate-secret", "--key-name", name]),
        b"",
    );
    let file = dir.join(format!("{name}.sk"));
    fs::write(&file, &secret).unwrap();
    let public = nix_public_key(&secret);
    (file, public)
}

/// `nix key convert-secret-to-public < secret`, without the final newline (Nix prints none).
pub fn nix_public_key(secret: &[u8]) -> String {
    let out = nix_ok(
        nix_command("nix").args(["key", "convert-secret-to-public"]),
        secret,
    );
    String::from_utf8(out)
        .unwrap()
        .trim_end_matches('\n')
        .to_owned()
}

/// A random string, so a test's derivations are built anew on every run (and Nix writes fresh
/// build logs).
pub fn nonce() -> String {
    crate::net::random_hex32()[..16].to_owned()
}

/// The derivation of TESTING-WITH-REAL-PARTS.md, with names `{prefix}-liba`, `{prefix}-libb`
/// and `{prefix}-app`: `app` depends on `liba` and `libb`, `libb` on `liba`. Each builder also
/// prints `building NAME` (in the build log). With a `nonce`, the derivations are new (built
/// anew, fresh logs).
pub fn closure_expr(prefix: &str, nonce: Option<&str>) -> String {
    let nonce = nonce
        .map(|n| format!("\n  nonce = \"{n}\";"))
        .unwrap_or_default();
    format!(
        r#"let mk = name: deps: derivation {{
  inherit name; system = "x86_64-linux"; builder = "/bin/sh";{nonce}
  args = [ "-c" ''
    /bin/mkdir -p $out/bin
    for d in ${{toString deps}}; do echo "$d" >> $out/deps; done
    echo ${{name}} > $out/bin/${{name}}; /bin/chmod +x $out/bin/${{name}}
    /bin/ln -s ../deps $out/bin/link
    echo building ${{name}}
  '' ]; }};
  a = mk "{prefix}-liba" []; b = mk "{prefix}-libb" [ a ];
in mk "{prefix}-app" [ a b ]
"#
    )
}

/// A built [`closure_expr`]: the expression's file, `result` (nix-build's symlink to `app`),
/// the app's output and derivation paths.
#[derive(Debug, Clone)]
pub struct BuiltClosure {
    pub expr: PathBuf,
    pub result: PathBuf,
    pub app: String,
    pub drv: String,
}

/// Writes [`closure_expr`] into `dir` and builds it with nix-build (`dir/result`), with no
/// substituters (no network here).
pub fn build_closure_expr(dir: &Path, prefix: &str, nonce: Option<&str>) -> BuiltClosure {
    let expr = dir.join("closure.nix");
    fs::write(&expr, closure_expr(prefix, nonce)).unwrap();
    fs::set_permissions(&expr, fs::Permissions::from_mode(0o644)).unwrap();
    let result = dir.join("result");
    let app = nix(
        "nix-build",
        &[
            path_str(&expr),
            "-o",
            path_str(&result),
            "--option",
            "substituters",
            "",
        ],
    );
    let drv = nix("nix-instantiate", &[path_str(&expr)]);
    BuiltClosure {
        expr,
        result,
        app,
        drv,
    }
}

/// Builds the closure derivation (names `cachecore-e2e-*`) into `dir` (`dir/result`) and
/// returns the closure (`nix-store -qR`), `app` last.
pub fn build_closure(dir: &Path) -> Vec<String> {
    let built = build_closure_expr(dir, "cachecore-e2e", None);
    let closure: Vec<String> = nix("nix-store", &["-qR", &built.app])
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(closure.len(), 3, "unexpected closure {closure:?}");
    assert_eq!(closure.last(), Some(&built.app));
    closure
}

/// `nix path-info --json PATH` in `store` (a chroot store directory, or None for the local
/// store): the path's JSON object.
pub fn nix_path_info(store: Option<&Path>, path: &str) -> serde_json::Value {
    let mut cmd = nix_command("nix");
    cmd.args(["path-info", "--json"]);
    if let Some(s) = store {
        cmd.arg("--store").arg(s);
    }
    cmd.arg(path);
    let out = nix_ok(&mut cmd, b"");
    let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
    v[0].clone()
}

/// Real Nix substitutes `closure` (its root last) from the binary cache at `from` into a fresh
/// chroot store under `dir`, requiring a signature by `public_key`, and registers every path
/// with the local store's NarHash, NarSize and references; with another key trusted instead,
/// Nix refuses the cache.
#[track_caller]
pub fn assert_nix_substitutes(from: &str, dir: &Path, closure: &[String], public_key: &str) {
    let root = closure.last().expect("a closure has a root");
    let fresh = dir.join("fresh-store");
    let res = nix_copy_from_checking_sigs(from, &fresh, root, public_key);
    assert!(
        res.status.success(),
        "nix copy --from {from} failed:\n{}",
        String::from_utf8_lossy(&res.stderr)
    );
    for p in closure {
        let ours = nix_path_info(Some(&fresh), p);
        let local = nix_path_info(None, p);
        for field in ["narHash", "narSize", "references"] {
            assert_eq!(ours[field], local[field], "{field} of {p} from {from}");
        }
    }
    let other = nix_public_key(&nix_ok(
        nix_command("nix").args(["key", "generate-secret", "--key-name", "someone-else-1"]),
        b"",
    ));
    let refused = nix_copy_from_checking_sigs(from, &dir.join("fresh-other-key"), root, &other);
    assert!(
        !refused.status.success(),
        "nix accepted paths from {from} signed by a key it does not trust"
    );
}

/// `nix copy --to 'file://DIR?PARAMS' PATHS...`.
pub fn nix_copy_to_file(dir: &Path, params: &str, paths: &[&str]) {
    let url = if params.is_empty() {
        format!("file://{}", dir.display())
    } else {
        format!("file://{}?{params}", dir.display())
    };
    let mut cmd = nix_command("nix");
    cmd.args(["copy", "--to", &url]).args(paths);
    nix_ok(&mut cmd, b"");
}

/// `nix copy --from file://CACHE --to STORE PATH --option require-sigs true --option
/// trusted-public-keys KEYS`: the output, successful or not.
pub fn nix_copy_from_file_checking_sigs(
    cache: &Path,
    chroot_store: &Path,
    path: &str,
    trusted_keys: &str,
) -> Output {
    nix_copy_from_checking_sigs(
        &format!("file://{}", cache.display()),
        chroot_store,
        path,
        trusted_keys,
    )
}

/// `nix copy --from URL --to STORE PATH --option require-sigs true --option
/// trusted-public-keys KEYS`, for any binary cache URL Nix reads (`file://`, `http://`): the
/// output, successful or not. Nix's narinfo disk cache is kept in STORE's parent directory, so
/// nothing an earlier run cached for the same URL is used.
pub fn nix_copy_from_checking_sigs(
    from: &str,
    chroot_store: &Path,
    path: &str,
    trusted_keys: &str,
) -> Output {
    let mut cmd = nix_command("nix");
    if let Some(parent) = chroot_store.parent() {
        cmd.env("XDG_CACHE_HOME", parent.join("nix-client-cache"));
    }
    cmd.arg("copy")
        .arg("--from")
        .arg(from)
        .arg("--to")
        .arg(chroot_store)
        .arg(path)
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", trusted_keys])
        .args(["--option", "substituters", ""]);
    nix_output(&mut cmd, b"")
}

/// Builds derivations given as (name, `/bin/sh -c` script) with nix-build (no substituters)
/// and returns their output paths, in order. A script may use `$out` and `${NAME}`, the output
/// of another one.
pub fn nix_build_scripts(dir: &Path, derivations: &[(&str, String)]) -> Vec<String> {
    let mut expr = String::from(
        "let mk = name: script: derivation {\n  inherit name; system = \"x86_64-linux\"; \
         builder = \"/bin/sh\"; args = [ \"-c\" script ]; };\nin rec {\n",
    );
    for (name, script) in derivations {
        let quoted = script.replace('\\', "\\\\").replace('"', "\\\"");
        expr.push_str(&format!("  {name} = mk \"{name}\" \"{quoted}\";\n"));
    }
    expr.push_str("}\n");
    let file = dir.join(format!("{}.nix", derivations[0].0));
    fs::write(&file, &expr).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
    let mut args = vec![
        path_str(&file),
        "--no-out-link",
        "--option",
        "substituters",
        "",
    ];
    for (name, _) in derivations {
        args.extend(["-A", name]);
    }
    let out: Vec<String> = nix("nix-build", &args).lines().map(str::to_owned).collect();
    assert_eq!(out.len(), derivations.len(), "nix-build printed {out:?}");
    for (path, (name, _)) in out.iter().zip(derivations) {
        assert!(
            path.ends_with(&format!("-{name}")),
            "{name} built as {path}"
        );
    }
    out
}

/// A real `nix-daemon` listening on a socket of its own, killed when dropped.
///
/// Nix 2.8 takes the socket path from `NIX_DAEMON_SOCKET_PATH` (checked by hand: `nix-daemon`
/// creates the socket there, and `nix-store` with `NIX_REMOTE=unix://PATH` talks to it). The
/// daemon must use the store directly (`NIX_REMOTE=local`): with `daemon` it would forward each
/// connection to a daemon, itself.
pub struct NixDaemon {
    child: std::process::Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl NixDaemon {
    /// Starts it and waits until it accepts a connection.
    pub fn start() -> NixDaemon {
        let dir = crate::tree::tempdir();
        let socket = dir.path().join("socket");
        let mut child = match Command::new("nix-daemon")
            .env("NIX_REMOTE", "local")
            .env("NIX_DAEMON_SOCKET_PATH", &socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(child) => child,
            Err(e) => panic!("{}", nix_missing("nix-daemon", &e)),
        };
        // Ready once a connection is accepted (the socket file exists a moment before).
        crate::process::wait_until(
            &format!("nix-daemon to listen on {}", socket.display()),
            std::time::Duration::from_secs(20),
            || {
                if let Some(status) = child.try_wait().unwrap() {
                    panic!(
                        "nix-daemon exited before listening on {}: {status}",
                        socket.display()
                    );
                }
                std::os::unix::net::UnixStream::connect(&socket).ok()
            },
        );
        NixDaemon {
            child,
            socket,
            _dir: dir,
        }
    }

    /// The socket it listens on.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for NixDaemon {
    fn drop(&mut self) {
        // The per-connection processes it forked end when their clients hang up. It may have
        // exited already; killing and reaping is all there is to do.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Writes and instantiates 1,000 `builtins.toFile` files, file i referring to i-1 and i/2 (a
/// lazy list refers to itself, so each file is made once), and a derivation referring to the
/// last one: a closure of 1,001 paths with real references and no builds. Returns the
/// derivation's path. `nix-instantiate` (not `--eval`, which is read-only) writes the files and
/// the .drv.
pub fn instantiate_thousand_files(dir: &Path) -> String {
    let expr = dir.join("thousand.nix");
    fs::write(
        &expr,
        r#"let
  n = 1000;
  files = builtins.genList (i: builtins.toFile "cachecore-local-k${toString i}"
    (if i == 0 then "leaf"
     else "${builtins.elemAt files (i - 1)} ${builtins.elemAt files (i / 2)}")) n;
in derivation {
  name = "cachecore-local-thousand"; system = "x86_64-linux"; builder = "/bin/sh";
  last = builtins.elemAt files (n - 1);
}
"#,
    )
    .unwrap();
    nix("nix-instantiate", &[path_str(&expr)])
}
