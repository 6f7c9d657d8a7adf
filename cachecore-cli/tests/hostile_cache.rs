//! Hostile caches: a generator of hand-made caches an attacker with write access (or a man in
//! the middle of an HTTP cache) could serve, each run through `pull`, `copy`, `verify`, `cat`,
//! `ls` and `info` over a local directory, over `http://` and over Garage (S3). Every command
//! must fail with the precise error, a non-zero exit and no panic, and leave the destination,
//! DEST and the local disk as they were. Where real Nix has an opinion, it is asked too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeMap;
use std::fs;
use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Output;

use cachecore::compression::Compression;
use cachecore::hash::{Hash, HashAlgo};
use cachecore::narinfo::NarInfo;
use cachecore::signing::SecretKey;
use common::garage::Garage;
use common::http_server::HttpServer;
use common::*;

// ---------------------------------------------------------------------------------------------
// The clean cache every hostile one starts from
// ---------------------------------------------------------------------------------------------

/// Two paths pushed with `--add` and signed: A (about 200 KiB of NAR) and B (smaller).
struct Fixture {
    tmp: tempfile::TempDir,
    /// The clean cache directory.
    base: PathBuf,
    secret: PathBuf,
    public: String,
    /// Full store paths and hash parts.
    a: String,
    a_hash: String,
    /// The NarSize of `a` in the clean cache.
    a_nar_size: u64,
    b: String,
    b_hash: String,
}

fn hash_part_of(full: &str) -> String {
    full.rsplit('/').next().unwrap()[..32].to_owned()
}

fn fixture() -> Fixture {
    let tmp = tempdir();
    let secret = tmp.path().join("good.sec");
    cachecore_ok(
        &[
            "key",
            "generate",
            "hostile-test-1",
            "--out",
            path_str(&secret),
        ],
        b"",
    );
    let public = String::from_utf8(cachecore_ok(&["key", "public", path_str(&secret)], b""))
        .unwrap()
        .trim()
        .to_owned();
    let src_a = tmp.path().join("srcA");
    fs::create_dir(&src_a).unwrap();
    fs::write(src_a.join("hello"), b"hello from A\n").unwrap();
    fs::write(src_a.join("data"), pseudo_random_bytes(200 << 10, 1)).unwrap();
    let src_b = tmp.path().join("srcB");
    fs::create_dir(&src_b).unwrap();
    fs::write(src_b.join("hello"), b"hello from B\n").unwrap();
    let base = tmp.path().join("base");
    let mut pushed = Vec::new();
    for src in [&src_a, &src_b] {
        let out = cachecore_ok(
            &[
                "push",
                path_str(&base),
                "--add",
                path_str(src),
                "--key",
                path_str(&secret),
                "--quiet",
            ],
            b"",
        );
        pushed.push(String::from_utf8(out).unwrap().trim().to_owned());
    }
    let (a, b) = (pushed[0].clone(), pushed[1].clone());
    Fixture {
        a_nar_size: read_narinfo(&base, &hash_part_of(&a)).nar_size,
        a_hash: hash_part_of(&a),
        b_hash: hash_part_of(&b),
        a,
        b,
        tmp,
        base,
        secret,
        public,
    }
}

fn copy_dir(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

fn read_narinfo(cache: &Path, hash: &str) -> NarInfo {
    NarInfo::parse(&fs::read_to_string(cache.join(format!("{hash}.narinfo"))).unwrap()).unwrap()
}

fn write_narinfo(cache: &Path, hash: &str, info: &NarInfo) {
    fs::write(cache.join(format!("{hash}.narinfo")), info.to_string()).unwrap();
}

fn edit_narinfo_text(cache: &Path, hash: &str, edit: impl FnOnce(String) -> String) {
    let file = cache.join(format!("{hash}.narinfo"));
    let text = fs::read_to_string(&file).unwrap();
    fs::write(&file, edit(text)).unwrap();
}

/// Every file under `dir` with its size and sha256 (symlinks by their target): what "left as it
/// was" is checked against.
fn snapshot(dir: &Path) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = fs::read_dir(&d) else {
            continue;
        };
        for entry in entries {
            let p = entry.unwrap().path();
            let rel = p.strip_prefix(dir).unwrap().display().to_string();
            let meta = p.symlink_metadata().unwrap();
            if meta.is_dir() {
                out.insert(rel, "dir".into());
                stack.push(p);
            } else if meta.file_type().is_symlink() {
                out.insert(rel, format!("-> {}", fs::read_link(&p).unwrap().display()));
            } else {
                let bytes = fs::read(&p).unwrap();
                out.insert(
                    rel,
                    format!("{} {}", bytes.len(), Hash::digest(HashAlgo::Sha256, &bytes)),
                );
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------------------------
// The hostile caches
// ---------------------------------------------------------------------------------------------

/// What a hostile cache breaks.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Level {
    /// A's narinfo: every command reading it fails, `ls` and `info` included.
    NarInfo,
    /// A's NAR object: commands reading the NAR fail; `ls` (from the listing) and `info` work.
    Nar,
}

struct Case {
    name: String,
    level: Level,
    /// Only on a local directory (symlinks mean nothing over HTTP or S3).
    local_only: bool,
    /// Run with `--trusted-key` (else `--no-check-sigs` / no key): cases about hashes that
    /// cannot be signed are checked without signatures, to reach the check they are about.
    signed: bool,
    /// What every failing command's message must contain.
    expect: String,
    /// `info` reads every narinfo by its key alone, so a narinfo consistent with its key but
    /// naming another path than the one asked for does not stop it.
    info_ok: bool,
}

/// A hostile cache: `build` shapes a copy of the clean cache into it.
type Builder = Box<dyn Fn(&Fixture, &Path) -> Case>;

fn case(name: &str, level: Level, expect: String) -> Case {
    Case {
        name: name.to_owned(),
        level,
        local_only: false,
        signed: true,
        expect,
        info_ok: false,
    }
}

/// The start of a NAR of one regular file of `size` bytes (its contents follow).
fn nar_head(size: u64) -> Vec<u8> {
    let mut head = Vec::new();
    for s in ["nix-archive-1", "(", "type", "regular", "contents"] {
        head.extend_from_slice(&(s.len() as u64).to_le_bytes());
        head.extend_from_slice(s.as_bytes());
        head.resize(head.len().div_ceil(8) * 8, 0);
    }
    head.extend_from_slice(&size.to_le_bytes());
    head
}

/// A NAR of one regular file of `size` zero bytes compressed by the real tool for `method`
/// (`zstd`, `xz`, `bzip2`), streamed through it without holding the NAR in memory; or, for
/// `none`, the start of that NAR followed by `size` zeros; brotli by cachecore's encoder.
fn bomb(method: Compression, size: u64) -> Vec<u8> {
    let tool: &[&str] = match method {
        Compression::Zstd => &["zstd", "-c", "-q", "-1"],
        Compression::Xz => &["xz", "-c", "-0", "-T1"],
        Compression::Bzip2 => &["bzip2", "-c", "-1"],
        Compression::None => {
            let mut out = nar_head(size);
            out.resize(out.len() + size as usize, 0);
            return out;
        }
        // No brotli tool on the machines: cachecore's own encoder, at its fastest.
        Compression::Brotli => {
            let mut c =
                cachecore::compression::Compressor::new(Vec::new(), method, Some(1)).unwrap();
            c.write_all(&nar_head(size)).unwrap();
            let zeros = vec![0u8; 1 << 20];
            for _ in 0..size / zeros.len() as u64 {
                c.write_all(&zeros).unwrap();
            }
            c.write_all(&zeros[..(size % zeros.len() as u64) as usize])
                .unwrap();
            return c.finish().unwrap();
        }
    };
    let mut child = std::process::Command::new(tool[0])
        .args(&tool[1..])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {} (apt-get install {}): {e}", tool[0], tool[0]));
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        stdin.write_all(&nar_head(size)).unwrap();
        let zeros = vec![0u8; 1 << 20];
        let mut left = size;
        while left > 0 {
            let n = left.min(zeros.len() as u64) as usize;
            stdin.write_all(&zeros[..n]).unwrap();
            left -= n as u64;
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success(), "{} failed", tool[0]);
    out.stdout
}

/// The bombs, made once per test binary: 1 GiB of zeros (in a NAR whose narinfo says about
/// 200 KiB) in a few KiB of zstd, xz or bzip2; 64 MiB uncompressed.
fn bombs() -> &'static [(Compression, Vec<u8>)] {
    static BOMBS: std::sync::OnceLock<Vec<(Compression, Vec<u8>)>> = std::sync::OnceLock::new();
    BOMBS.get_or_init(|| {
        [
            (Compression::Zstd, 1u64 << 30),
            (Compression::Xz, 1 << 30),
            (Compression::Bzip2, 1 << 30),
            (Compression::Brotli, 1 << 30),
            (Compression::None, 64 << 20),
        ]
        .into_iter()
        .map(|(m, size)| (m, bomb(m, size)))
        .collect()
    })
}

fn builders() -> Vec<Builder> {
    let mut v: Vec<Builder> = Vec::new();
    // 1. A narinfo copied over another path's key (the signature is valid: for B).
    v.push(Box::new(|f, dir| {
        fs::copy(
            dir.join(format!("{}.narinfo", f.b_hash)),
            dir.join(format!("{}.narinfo", f.a_hash)),
        )
        .unwrap();
        case(
            "swapped narinfo",
            Level::NarInfo,
            format!("describes {}, not /nix/store/{}-…", f.b, f.a_hash),
        )
    }));
    // 2. StorePath in another store directory.
    v.push(Box::new(|f, dir| {
        let base = f.a.rsplit('/').next().unwrap().to_owned();
        edit_narinfo_text(dir, &f.a_hash, |t| {
            t.replace(
                &format!("StorePath: {}", f.a),
                &format!("StorePath: /evil/store/{base}"),
            )
        });
        case(
            "StorePath in another store dir",
            Level::NarInfo,
            format!(
                "describes /evil/store/{base}, not /nix/store/{}-…",
                f.a_hash
            ),
        )
    }));
    // 3. The right hash part with another name.
    v.push(Box::new(|f, dir| {
        edit_narinfo_text(dir, &f.a_hash, |t| {
            t.replace(
                &format!("StorePath: {}", f.a),
                &format!("StorePath: /nix/store/{}-evil", f.a_hash),
            )
        });
        Case {
            info_ok: true,
            ..case(
                "StorePath with another name",
                Level::NarInfo,
                format!("describes /nix/store/{}-evil, not {}", f.a_hash, f.a),
            )
        }
    }));
    // 4. URL outside nar/.
    v.push(Box::new(|f, dir| {
        let mut info = read_narinfo(dir, &f.a_hash);
        info.url = "../outside.nar".into();
        write_narinfo(dir, &f.a_hash, &info);
        case(
            "URL outside the cache",
            Level::Nar,
            "../outside.nar is not a NAR key (NARs are written under nar/)".into(),
        )
    }));
    // 5. URL naming another path's narinfo.
    v.push(Box::new(|f, dir| {
        let mut info = read_narinfo(dir, &f.a_hash);
        info.url = format!("{}.narinfo", f.b_hash);
        write_narinfo(dir, &f.a_hash, &info);
        case(
            "URL naming a narinfo",
            Level::Nar,
            format!("{}.narinfo", f.b_hash),
        )
    }));
    // 6. A NAR object that is a symlink to a private file outside the cache.
    v.push(Box::new(|f, dir| {
        let secret = dir.parent().unwrap().join(format!(
            "private-{}",
            dir.file_name().unwrap().to_string_lossy()
        ));
        fs::write(&secret, b"private key material\n").unwrap();
        fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("nar/leak.nar")).unwrap();
        let mut info = read_narinfo(dir, &f.a_hash);
        info.url = "nar/leak.nar".into();
        write_narinfo(dir, &f.a_hash, &info);
        Case {
            local_only: true,
            ..case(
                "symlinked NAR object",
                Level::Nar,
                "nar/leak.nar leads outside the cache directory through a symbolic link".into(),
            )
        }
    }));
    // 7. A truncated NAR object.
    v.push(Box::new(|f, dir| {
        let info = read_narinfo(dir, &f.a_hash);
        let file = dir.join(&info.url);
        let bytes = fs::read(&file).unwrap();
        fs::write(&file, &bytes[..60]).unwrap();
        case(
            "truncated NAR",
            Level::Nar,
            format!(
                "FileSize mismatch: the narinfo says {}, the data gives 60",
                info.file_size.unwrap()
            ),
        )
    }));
    // 8. An extended NAR object.
    v.push(Box::new(|f, dir| {
        let info = read_narinfo(dir, &f.a_hash);
        let file = dir.join(&info.url);
        let mut bytes = fs::read(&file).unwrap();
        bytes.extend(pseudo_random_bytes(1 << 20, 2));
        fs::write(&file, &bytes).unwrap();
        case(
            "extended NAR",
            Level::Nar,
            format!(
                "holds more than the {} bytes its narinfo's FileSize declares",
                info.file_size.unwrap()
            ),
        )
    }));
    // 9. A's NAR replaced by B's, FileHash/FileSize (not signed) adjusted: a man in the middle.
    v.push(Box::new(|f, dir| {
        let a = read_narinfo(dir, &f.a_hash);
        let b = read_narinfo(dir, &f.b_hash);
        fs::copy(dir.join(&b.url), dir.join(&a.url)).unwrap();
        let mut info = a.clone();
        info.file_hash = b.file_hash.clone();
        info.file_size = b.file_size;
        write_narinfo(dir, &f.a_hash, &info);
        case(
            "replaced NAR",
            Level::Nar,
            format!(
                "NarSize mismatch: the narinfo says {}, the data gives {}",
                a.nar_size, b.nar_size
            ),
        )
    }));
    // 10-14. Decompression bombs in each compression, FileHash/FileSize/Compression (not
    // signed) made to match the bomb.
    for (method, made) in bombs() {
        let method = *method;
        v.push(Box::new(move |f, dir| {
            let mut info = read_narinfo(dir, &f.a_hash);
            let key = format!("nar/bomb.nar{}", method.extension());
            fs::write(dir.join(&key), made).unwrap();
            info.url = key;
            info.compression = Some(method.name().into());
            info.file_hash = Some(Hash::digest(HashAlgo::Sha256, made));
            info.file_size = Some(made.len() as u64);
            write_narinfo(dir, &f.a_hash, &info);
            case(
                &format!("{method} bomb"),
                Level::Nar,
                format!(
                    "holds more than the {} bytes its narinfo's NarSize declares (decompressed)",
                    info.nar_size
                ),
            )
        }));
    }
    // 14. A NarHash in sha1 (which cannot be signed: checked without signatures).
    v.push(Box::new(|f, dir| {
        let mut info = read_narinfo(dir, &f.a_hash);
        info.nar_hash = Hash::digest(HashAlgo::Sha1, b"whatever");
        write_narinfo(dir, &f.a_hash, &info);
        Case {
            signed: false,
            ..case(
                "sha1 NarHash",
                Level::Nar,
                "its narinfo's NarHash is a sha1 hash".into(),
            )
        }
    }));
    // 15. A FileHash in md5 that does not match (checked with md5, not skipped).
    v.push(Box::new(|f, dir| {
        let mut info = read_narinfo(dir, &f.a_hash);
        info.file_hash = Some(Hash::digest(HashAlgo::Md5, b"other bytes"));
        write_narinfo(dir, &f.a_hash, &info);
        case(
            "wrong md5 FileHash",
            Level::Nar,
            format!(
                "FileHash mismatch: the narinfo says {}",
                Hash::digest(HashAlgo::Md5, b"other bytes")
            ),
        )
    }));
    // 16. A 2 MiB narinfo.
    v.push(Box::new(|f, dir| {
        edit_narinfo_text(dir, &f.a_hash, |mut t| {
            let pad = format!("X-Pad: {}\n", "a".repeat(1000));
            for _ in 0..2048 {
                t.push_str(&pad);
            }
            t
        });
        case(
            "huge narinfo",
            Level::NarInfo,
            format!(
                "{}.narinfo is larger than 1048576 bytes, the most cachecore reads",
                f.a_hash
            ),
        )
    }));
    // 17-18. Sizes near 2^64.
    v.push(Box::new(|f, dir| {
        let info = read_narinfo(dir, &f.a_hash);
        edit_narinfo_text(dir, &f.a_hash, |t| {
            t.replace(
                &format!("NarSize: {}\n", info.nar_size),
                "NarSize: 18446744073709551615\n",
            )
        });
        case(
            "NarSize near 2^64",
            Level::NarInfo,
            "field NarSize: 18446744073709551615 is larger than the 1125899906842624 bytes (2^50)"
                .into(),
        )
    }));
    v.push(Box::new(|f, dir| {
        let info = read_narinfo(dir, &f.a_hash);
        edit_narinfo_text(dir, &f.a_hash, |t| {
            t.replace(
                &format!("FileSize: {}\n", info.file_size.unwrap()),
                "FileSize: 18446744073709551600\n",
            )
        });
        case(
            "FileSize near 2^64",
            Level::NarInfo,
            "field FileSize: 18446744073709551600 is larger than".into(),
        )
    }));
    // 19. A 100 KiB line of garbage: quoted by a short prefix only.
    v.push(Box::new(|f, dir| {
        edit_narinfo_text(dir, &f.a_hash, |t| {
            format!("{t}{}\n", "Z".repeat(100 << 10))
        });
        case(
            "long garbage line",
            Level::NarInfo,
            format!("\"{}…\" is not a `Key: value` line", "Z".repeat(64)),
        )
    }));
    v
}

// ---------------------------------------------------------------------------------------------
// Running every command on a hostile cache
// ---------------------------------------------------------------------------------------------

/// Where a hostile cache is served from.
enum Transport<'a> {
    Local,
    Http,
    Garage(&'a Garage),
}

/// `cachecore ARGS`, with Garage's key in the environment when needed.
fn run(transport: &Transport, args: &[&str]) -> Output {
    let mut cmd = cachecore_command();
    cmd.args(args);
    if let Transport::Garage(g) = transport {
        cmd.env_remove("AWS_PROFILE")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(g.env());
    }
    run_with_stdin(&mut cmd, b"")
}

/// The one error line of a failed command, which must contain `expect`; and no error line
/// longer than a sentence (hostile text is quoted by a short prefix only).
#[track_caller]
fn assert_fails_with(out: &Output, what: &str, expect: &str) {
    let line = assert_clean_error(out, what);
    assert!(
        line.contains(expect),
        "`{what}`: the error should contain\n  {expect}\nbut is\n  {line}"
    );
    assert!(
        line.len() < 1000,
        "`{what}`: an error line of {} bytes quotes too much: {}…",
        line.len(),
        &line[..200]
    );
}

/// Runs pull, cat, copy, verify, ls and info on the hostile cache at `url` (built from the
/// clean one as `case` says) and checks each one's outcome.
fn run_commands(f: &Fixture, transport: &Transport, url: &str, c: &Case, work: &Path) {
    let what = |cmd: &str| format!("{cmd} on {} over {url}", c.name);
    let keys: Vec<&str> = if c.signed {
        vec!["--trusted-key", &f.public]
    } else {
        vec![]
    };

    // pull: fails, DEST and its directory unchanged (no staging left, nothing unpacked).
    let pull_dir = work.join("pull");
    fs::create_dir_all(&pull_dir).unwrap();
    let before = snapshot(&pull_dir);
    let dest = pull_dir.join("out");
    let mut args = vec!["pull", url, &f.a, path_str(&dest)];
    if c.signed {
        args.extend(&keys);
    } else {
        args.push("--no-check-sigs");
    }
    let out = run(transport, &args);
    assert_fails_with(&out, &what("pull"), &c.expect);
    assert_eq!(
        snapshot(&pull_dir),
        before,
        "{}: pull left something",
        what("pull")
    );

    // cat by ranged reads (no flag) cannot check the NarHash, but it ends by itself (no
    // signal, no panic), fails with one clean sentence when it fails, and never prints more
    // than the path's real NAR holds: every size it goes by is checked against the others.
    let file = format!("{}/hello", f.a);
    let out = run(transport, &["cat", url, &file]);
    assert!(
        out.status.code().is_some(),
        "{}: killed by a signal ({}); stderr: {}",
        what("ranged cat"),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        assert_no_panic(&out, &what("ranged cat"));
    } else {
        assert_clean_error(&out, &what("ranged cat"));
    }
    assert!(
        out.stdout.len() as u64 <= f.a_nar_size,
        "{}: printed {} bytes, more than the path's whole NAR ({} bytes)",
        what("ranged cat"),
        out.stdout.len(),
        f.a_nar_size
    );

    // cat --verify (and with --trusted-key): fails, and nothing reaches stdout.
    let mut args = vec!["cat", url, &file, "--verify"];
    args.extend(&keys);
    let out = run(transport, &args);
    assert_fails_with(&out, &what("cat"), &c.expect);
    assert!(
        out.stdout.is_empty(),
        "{}: cat printed {} unchecked bytes",
        what("cat"),
        out.stdout.len()
    );

    // copy into a destination that already holds B: fails, the destination unchanged (B's
    // objects and narinfo included).
    let dest_cache = work.join("dest");
    if !dest_cache.exists() {
        cachecore_ok(
            &[
                "copy",
                path_str(&f.base),
                path_str(&dest_cache),
                &f.b,
                "--quiet",
            ],
            b"",
        );
    }
    let before = snapshot(&dest_cache);
    let mut args = vec!["copy", url, path_str(&dest_cache), &f.a, "--quiet"];
    args.extend(&keys);
    let out = run(transport, &args);
    assert_fails_with(&out, &what("copy"), &c.expect);
    assert_eq!(
        snapshot(&dest_cache),
        before,
        "{}: the destination changed",
        what("copy")
    );

    // verify (of A and its closure): exit 1, the problem named on stdout.
    let mut args = vec!["verify", url, &f.a];
    args.extend(&keys);
    let out = run(transport, &args);
    assert_no_panic(&out, &what("verify"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}: stdout {stdout} stderr {}",
        what("verify"),
        String::from_utf8_lossy(&out.stderr)
    );
    // verify prints `<object>: <what is wrong>`.
    let as_problem = c.expect.replacen(".narinfo ", ".narinfo: ", 1);
    assert!(
        stdout.contains(&c.expect) || stdout.contains(&as_problem),
        "{}: stdout should contain\n  {}\nbut is\n  {stdout}",
        what("verify"),
        c.expect
    );

    // ls of A and info: fail on a bad narinfo; work on a bad NAR (they do not read NARs).
    let out = run(transport, &["ls", url, &f.a]);
    let info = match transport {
        Transport::Http => None, // a plain HTTP cache cannot be listed
        _ => Some(run(transport, &["info", url])),
    };
    match c.level {
        Level::NarInfo => {
            assert_fails_with(&out, &what("ls"), &c.expect);
            match info {
                Some(info) if c.info_ok => assert_cachecore_ok(&info, &["info", url]),
                Some(info) => assert_fails_with(&info, &what("info"), &c.expect),
                None => {}
            }
        }
        Level::Nar => {
            assert_cachecore_ok(&out, &["ls", url, &f.a]);
            if let Some(info) = info {
                assert_cachecore_ok(&info, &["info", url]);
            }
        }
    }
}

/// Builds every hostile cache under `root` (one directory each) and returns them.
fn build_all(f: &Fixture, root: &Path) -> Vec<(PathBuf, Case)> {
    builders()
        .iter()
        .enumerate()
        .map(|(i, build)| {
            let dir = root.join(format!("case{i}"));
            copy_dir(&f.base, &dir);
            let c = build(f, &dir);
            (dir, c)
        })
        .collect()
}

#[test]
fn hostile_caches_in_a_local_directory() {
    let f = fixture();
    let root = f.tmp.path().join("local");
    for (i, (dir, c)) in build_all(&f, &root).into_iter().enumerate() {
        let work = f.tmp.path().join(format!("work-local-{i}"));
        run_commands(&f, &Transport::Local, path_str(&dir), &c, &work);
    }
}

#[test]
fn hostile_caches_over_http() {
    let f = fixture();
    let root = f.tmp.path().join("served");
    let cases = build_all(&f, &root);
    let server = HttpServer::serve(&root);
    for (i, (dir, c)) in cases.into_iter().enumerate() {
        if c.local_only {
            continue;
        }
        let url = format!(
            "{}/{}",
            server.url(),
            dir.file_name().unwrap().to_string_lossy()
        );
        let work = f.tmp.path().join(format!("work-http-{i}"));
        run_commands(&f, &Transport::Http, &url, &c, &work);
    }
}

#[test]
fn hostile_caches_in_garage() {
    let f = fixture();
    let garage = Garage::start();
    let root = f.tmp.path().join("s3");
    let cases = build_all(&f, &root);
    let rt = cachecore::ops::runtime().unwrap();
    for (i, (dir, c)) in cases.into_iter().enumerate() {
        if c.local_only {
            continue;
        }
        // The hostile objects go into the bucket as they are, under a prefix per case.
        let prefix = format!("case{i}");
        let url = garage.url(&prefix);
        let cache = cachecore::store::BinaryCache::open_with_env(&url, &garage.env()).unwrap();
        rt.block_on(async {
            for (rel, kind) in snapshot(&dir) {
                if kind == "dir" {
                    continue;
                }
                let bytes = fs::read(dir.join(&rel)).unwrap();
                cache
                    .objects()
                    .put(&rel, bytes.into(), cachecore::store::WriteMode::Overwrite)
                    .await
                    .unwrap();
            }
        });
        let work = f.tmp.path().join(format!("work-s3-{i}"));
        run_commands(&f, &Transport::Garage(&garage), &url, &c, &work);
    }
}

// ---------------------------------------------------------------------------------------------
// What real Nix thinks
// ---------------------------------------------------------------------------------------------

#[test]
fn a_swapped_narinfo_is_refused_by_nix_and_by_cachecore() {
    let f = fixture();
    let dir = f.tmp.path().join("swapped");
    copy_dir(&f.base, &dir);
    let c = builders()[0](&f, &dir);
    assert_eq!(c.name, "swapped narinfo");

    // Nix, requiring signatures by the cache's key, refuses to substitute A from it.
    let nix =
        nix_copy_from_file_checking_sigs(&dir, &f.tmp.path().join("nix-store"), &f.a, &f.public);
    assert!(
        !nix.status.success(),
        "Nix accepted a swapped narinfo:\n{}",
        String::from_utf8_lossy(&nix.stderr)
    );
    // And so does cachecore.
    let dest = f.tmp.path().join("out");
    let out = cachecore_output(
        &[
            "pull",
            path_str(&dir),
            &f.a,
            path_str(&dest),
            "--trusted-key",
            &f.public,
        ],
        b"",
    );
    assert_fails_with(&out, "pull of a swapped narinfo", &c.expect);
    assert!(!dest.exists());

    // The clean cache: both accept it.
    let nix = nix_copy_from_file_checking_sigs(
        &f.base,
        &f.tmp.path().join("nix-store-2"),
        &f.a,
        &f.public,
    );
    assert!(
        nix.status.success(),
        "{}",
        String::from_utf8_lossy(&nix.stderr)
    );
    cachecore_ok(
        &[
            "pull",
            path_str(&f.base),
            &f.a,
            path_str(&dest),
            "--trusted-key",
            &f.public,
        ],
        b"",
    );
    assert_eq!(fs::read(dest.join("hello")).unwrap(), b"hello from A\n");
}

// ---------------------------------------------------------------------------------------------
// Positive controls: what must keep working
// ---------------------------------------------------------------------------------------------

#[test]
fn other_file_hash_algorithms_are_checked_not_refused() {
    let f = fixture();
    for algo in [HashAlgo::Md5, HashAlgo::Sha1, HashAlgo::Sha512] {
        let dir = f.tmp.path().join(format!("algo-{algo}"));
        copy_dir(&f.base, &dir);
        let mut info = read_narinfo(&dir, &f.a_hash);
        let bytes = fs::read(dir.join(&info.url)).unwrap();
        info.file_hash = Some(Hash::digest(algo, &bytes));
        write_narinfo(&dir, &f.a_hash, &info);
        let dest = f.tmp.path().join(format!("out-{algo}"));
        cachecore_ok(
            &[
                "pull",
                path_str(&dir),
                &f.a,
                path_str(&dest),
                "--trusted-key",
                &f.public,
            ],
            b"",
        );
        cachecore_ok(&["verify", path_str(&dir), "--trusted-key", &f.public], b"");
        // copy names the object by its sha256 and writes a sha256 FileHash.
        let to = f.tmp.path().join(format!("copy-{algo}"));
        cachecore_ok(
            &["copy", path_str(&dir), path_str(&to), &f.a, "--quiet"],
            b"",
        );
        let copied = read_narinfo(&to, &f.a_hash);
        let sha = Hash::digest(HashAlgo::Sha256, &bytes);
        assert_eq!(copied.file_hash, Some(sha.clone()));
        assert_eq!(copied.url, format!("nar/{}.nar.zst", sha.to_nix32()));
        cachecore_ok(&["verify", path_str(&to), "--trusted-key", &f.public], b"");
    }
}

#[test]
fn copy_writes_under_its_own_keys_and_only_signed_paths_with_trusted_key() {
    let f = fixture();
    // A narinfo whose URL points at B's NAR key in the destination: the copy of A fails its
    // checks and B's object in the destination is untouched; with the right object the copy
    // lands under cachecore's key, whatever URL the source gave.
    let dir = f.tmp.path().join("renamed");
    copy_dir(&f.base, &dir);
    let mut info = read_narinfo(&dir, &f.a_hash);
    let object = fs::read(dir.join(&info.url)).unwrap();
    fs::write(dir.join("nar/elsewhere.nar.zst"), &object).unwrap();
    info.url = "nar/elsewhere.nar.zst".into();
    write_narinfo(&dir, &f.a_hash, &info);
    let to = f.tmp.path().join("to");
    cachecore_ok(
        &["copy", path_str(&dir), path_str(&to), &f.a, "--quiet"],
        b"",
    );
    let copied = read_narinfo(&to, &f.a_hash);
    assert_eq!(
        copied.url,
        format!(
            "nar/{}.nar.zst",
            Hash::digest(HashAlgo::Sha256, &object).to_nix32()
        )
    );
    assert!(!to.join("nar/elsewhere.nar.zst").exists());

    // --trusted-key: an unsigned path stops the copy before anything is written.
    let unsigned = f.tmp.path().join("unsigned");
    copy_dir(&f.base, &unsigned);
    let mut info = read_narinfo(&unsigned, &f.b_hash);
    info.signatures.clear();
    write_narinfo(&unsigned, &f.b_hash, &info);
    let to = f.tmp.path().join("to-signed");
    cachecore_ok(&["init", path_str(&to)], b"");
    let before = snapshot(&to);
    let out = cachecore_output(
        &[
            "copy",
            path_str(&unsigned),
            path_str(&to),
            "--all",
            "--trusted-key",
            &f.public,
        ],
        b"",
    );
    assert_fails_with(
        &out,
        "copy --trusted-key of an unsigned path",
        &format!("{}: none of its signatures (none) is by a trusted key", f.b),
    );
    assert_eq!(snapshot(&to), before);
    // Signed by another key only: refused the same way.
    let other = SecretKey::generate("other-1").unwrap();
    let mut info = read_narinfo(&unsigned, &f.b_hash);
    info.sign(&other).unwrap();
    write_narinfo(&unsigned, &f.b_hash, &info);
    let out = cachecore_output(
        &[
            "copy",
            path_str(&unsigned),
            path_str(&to),
            &f.b,
            "--trusted-key",
            &f.public,
        ],
        b"",
    );
    assert_fails_with(&out, "copy of a path signed by another key", "(other-1)");
    assert_eq!(snapshot(&to), before);
}

// ---------------------------------------------------------------------------------------------
// An upstream that invents references: walks are checked and bounded
// ---------------------------------------------------------------------------------------------

/// `cachecore copy ARGS` from an upstream that invents an unsigned narinfo naming 5,000 new
/// references for every narinfo asked for: (its clean error line, seconds taken, peak RSS in
/// MiB). The walk must end by itself within 60 s, and nothing be copied.
fn copy_from_inventing_upstream(
    evil: &scripted::ScriptedServer,
    dest: &Path,
    extra: &[&str],
) -> (String, f64, u64) {
    let root = format!("/nix/store/{}-evil", scripted::nix32_of(0));
    let (mut cmd, peak) = PeakRss::command(env!("CARGO_BIN_EXE_cachecore"));
    cmd.args(["copy", &evil.url(), path_str(dest), &root, "--quiet"])
        .args(extra);
    let start = std::time::Instant::now();
    let out = run_within(&mut cmd, b"", std::time::Duration::from_secs(60));
    let took = start.elapsed().as_secs_f64();
    let line = assert_clean_error(&out, "copy from an upstream inventing references");
    let mib = peak.kib() >> 10;
    eprintln!("copy {extra:?}: {took:.1} s, peak RSS {mib} MiB, {line}");
    let written: Vec<String> = snapshot(dest)
        .into_iter()
        .filter(|(k, v)| k != "nix-cache-info" && v != "dir")
        .map(|(k, _)| k)
        .collect();
    assert!(written.is_empty(), "copied {written:?}");
    (line, took, mib)
}

#[test]
fn copy_checks_each_signature_before_following_references_of_an_inventing_upstream() {
    let tmp = tempdir();
    let public = SecretKey::generate("trusted-1")
        .unwrap()
        .public_key()
        .to_string();
    let evil = scripted::inventing_upstream(5_000);
    let dest = tmp.path().join("dest");
    let (line, took, mib) = copy_from_inventing_upstream(&evil, &dest, &["--trusted-key", &public]);
    // The root's narinfo is refused for its signature before any of its references is read.
    assert!(
        line.contains("-evil: none of its signatures (none) is by a trusted key"),
        "{line}"
    );
    let read = evil.asked_ending(".narinfo");
    assert!(read <= 2, "{read} narinfos read past an unsigned one");
    assert!(took < 10.0, "took {took:.1} s");
    assert!(mib < 100, "peak RSS {mib} MiB");
}

#[test]
fn copy_without_trusted_keys_stops_an_inventing_upstream_at_the_walk_limit() {
    let tmp = tempdir();
    let evil = scripted::inventing_upstream(5_000);
    let dest = tmp.path().join("dest");
    let (line, took, mib) = copy_from_inventing_upstream(&evil, &dest, &[]);
    // 500,000 paths (the default limit) are reached after 100 narinfos of 5,000 references.
    assert!(
        line.contains("has more than 500000 store paths, the limit of one walk (max_paths)"),
        "{line}"
    );
    let read = evil.asked_ending(".narinfo");
    assert!(read <= 100 + 32, "{read} narinfos read");
    assert!(took < 30.0, "took {took:.1} s");
    assert!(mib < 400, "peak RSS {mib} MiB");
}

#[test]
fn pull_removes_only_its_own_staging() {
    let f = fixture();
    let work = f.tmp.path().join("pulls");
    fs::create_dir(&work).unwrap();
    // A directory named like an old-style staging directory, and one of a dead pull.
    let foreign = work.join(".out.cachecore-pull-1");
    fs::create_dir(&foreign).unwrap();
    fs::write(foreign.join("mine"), b"keep me").unwrap();
    let dead = work.join(".out.cachecore-pull-999999999-00000000000000aa");
    fs::create_dir(&dead).unwrap();
    fs::write(dead.join("cachecore-pull.pid"), "999999999").unwrap();
    fs::write(dead.join("junk"), vec![0u8; 4096]).unwrap();

    let dest = work.join("out");
    cachecore_ok(
        &[
            "pull",
            path_str(&f.base),
            &f.a,
            path_str(&dest),
            "--trusted-key",
            &f.public,
        ],
        b"",
    );
    assert_eq!(fs::read(foreign.join("mine")).unwrap(), b"keep me");
    assert!(!dead.exists(), "a dead pull's staging directory is cleaned");
    let mut names: Vec<String> = fs::read_dir(&work)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names, [".out.cachecore-pull-1", "out"]);

    // A DEST that exists (even an empty directory) is never replaced.
    let empty = work.join("empty");
    fs::create_dir(&empty).unwrap();
    let out = cachecore_output(
        &[
            "pull",
            path_str(&f.base),
            &f.a,
            path_str(&empty),
            "--trusted-key",
            &f.public,
        ],
        b"",
    );
    assert_fails_with(&out, "pull onto an empty directory", "already exists");
    assert_eq!(fs::read_dir(&empty).unwrap().count(), 0);
}

// ---------------------------------------------------------------------------------------------
// Debris and repair
// ---------------------------------------------------------------------------------------------

#[test]
fn debris_is_reported_and_repair_repushes_damaged_paths() {
    let f = fixture();
    let dir = f.tmp.path().join("damaged");
    copy_dir(&f.base, &dir);
    // A killed upload's staging file, and a damaged NAR.
    fs::write(dir.join("nar/x.nar.zst#3"), vec![1u8; 1234]).unwrap();
    let info = read_narinfo(&dir, &f.a_hash);
    let object = dir.join(&info.url);
    let bytes = fs::read(&object).unwrap();
    fs::write(&object, &bytes[..bytes.len() / 2]).unwrap();

    let out = cachecore_output(&["info", path_str(&dir)], b"");
    assert_cachecore_ok(&out, &["info"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("Debris: 1 leftover objects of killed uploads, 1234 bytes"),
        "{stdout}"
    );
    let out = cachecore_output(&["verify", path_str(&dir)], b"");
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nar/x.nar.zst#3 (1234 bytes)"), "{stderr}");

    // A plain push skips the damaged path; --repair pushes it again.
    let src = f.tmp.path().join("srcA");
    cachecore_ok(
        &["push", path_str(&dir), "--add", path_str(&src), "--quiet"],
        b"",
    );
    assert_eq!(
        cachecore_output(&["verify", path_str(&dir), &f.a], b"")
            .status
            .code(),
        Some(1)
    );
    cachecore_ok(
        &[
            "push",
            path_str(&dir),
            "--add",
            path_str(&src),
            "--repair",
            "--key",
            path_str(&f.secret),
            "--quiet",
        ],
        b"",
    );
    cachecore_ok(
        &["verify", path_str(&dir), &f.a, "--trusted-key", &f.public],
        b"",
    );
}

/// A listing is no part of what a narinfo signs: one forged by whoever can write the cache
/// (invented files, a symlink to /etc/shadow, another path's listing) makes `ls`, `cat` and
/// `/serve/` show what the NAR does not hold. `verify` reads every listing against its NAR and
/// reports each forged one as a problem of its path (exit 1), with where it first differs; a
/// path without a listing is no problem.
#[test]
fn verify_finds_listings_that_do_not_describe_their_nar() {
    let f = fixture();
    let ls = |hash: &str| format!("{hash}.ls");
    let a_listing = fs::read_to_string(f.base.join(ls(&f.a_hash))).unwrap();
    assert!(a_listing.contains(r#""size":13,"#), "{a_listing}");
    /// (what, how the copy of the cache is forged, the path, what verify says of it)
    type Forgery<'a> = (&'a str, Box<dyn Fn(&Path) + 'a>, &'a str, &'a str);
    let cases: [Forgery; 4] = [
        (
            "an invented symlink",
            Box::new(|dir| {
                let forged = a_listing.replacen(
                    r#""entries":{"#,
                    r#""entries":{"sudo":{"type":"symlink","target":"/etc/shadow"},"#,
                    1,
                );
                fs::write(dir.join(ls(&f.a_hash)), forged).unwrap();
            }),
            &f.a,
            r#"its listing does not describe its NAR: the listing has "sudo": a symlink to "/etc/shadow" where the NAR has nothing more"#,
        ),
        (
            "a file's size",
            Box::new(|dir| {
                let forged = a_listing.replace(r#""size":13,"#, r#""size":99,"#);
                fs::write(dir.join(ls(&f.a_hash)), forged).unwrap();
            }),
            &f.a,
            r#"its listing does not describe its NAR: the listing has "hello": a regular file of 99 bytes"#,
        ),
        (
            "another path's listing, where there was none",
            Box::new(|dir| {
                fs::remove_file(dir.join(ls(&f.b_hash))).unwrap();
                fs::write(dir.join(ls(&f.b_hash)), &a_listing).unwrap();
            }),
            &f.b,
            r#"its listing does not describe its NAR: the listing has "data": a regular file"#,
        ),
        (
            "not a listing",
            Box::new(|dir| fs::write(dir.join(ls(&f.a_hash)), "{\"version\":1}").unwrap()),
            &f.a,
            r#"its listing does not parse: listing at top level: missing "root""#,
        ),
    ];
    for (name, forge, path, expect) in cases {
        let dir = f.tmp.path().join(name.replace(' ', "-"));
        copy_dir(&f.base, &dir);
        forge(&dir);
        let out = cachecore_output(&["verify", path_str(&dir), "--trusted-key", &f.public], b"");
        assert_no_panic(&out, "verify");
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(stdout.lines().count(), 1, "{name}: {stdout}");
        assert!(
            stdout.starts_with(&format!("{path}: {expect}")),
            "{name}: {stdout}"
        );
        // Asked for the path alone, too.
        let out = cachecore_output(&["verify", path_str(&dir), path], b"");
        assert_eq!(out.status.code(), Some(1), "{name}: {out:?}");
    }
    // No listing is no problem.
    let dir = f.tmp.path().join("no-listing");
    copy_dir(&f.base, &dir);
    fs::remove_file(dir.join(ls(&f.a_hash))).unwrap();
    cachecore_ok(&["verify", path_str(&dir), "--trusted-key", &f.public], b"");
    cachecore_ok(
        &["verify", path_str(&f.base), "--trusted-key", &f.public],
        b"",
    );
}

// ---------------------------------------------------------------------------------------------
// Files that are not regular files
// ---------------------------------------------------------------------------------------------

/// Replaces the object at `file` with a FIFO (`mkfifo`), or a socket when `socket`.
fn replace_with_special(file: &Path, socket: bool) {
    fs::remove_file(file).unwrap();
    if socket {
        // Bound where its path is short enough for a socket address, then moved into place;
        // the listener is dropped at once: the socket file stays, nothing answers on it.
        let short = tempfile::Builder::new().tempdir_in("/tmp").unwrap();
        std::os::unix::net::UnixListener::bind(short.path().join("s")).unwrap();
        fs::rename(short.path().join("s"), file).unwrap();
    } else {
        nix_ok(std::process::Command::new("mkfifo").arg(file), b"");
    }
}

/// Anyone who can write into a shared cache directory can put a FIFO (or a socket) where an
/// object belongs. Opening a FIFO waits for a writer, forever: every command reading the cache
/// must refuse it at once, in one sentence naming the object, never hang. A time limit turns a
/// hang into a failure.
#[test]
fn fifos_and_sockets_at_object_keys_are_refused_not_waited_on() {
    let f = fixture();
    let limit = std::time::Duration::from_secs(30);
    let info = read_narinfo(&f.base, &f.a_hash);
    let narinfo = format!("{}.narinfo", f.a_hash);
    let listing = format!("{}.ls", f.a_hash);
    let file = format!("{}/hello", f.a);
    for socket in [false, true] {
        let what = if socket { "socket" } else { "FIFO" };
        let refused = format!("is a {what}, not a regular file");
        // `cachecore ARGS` fails at once, in one line naming `key` and what is there.
        let fails = |args: &[&str], key: &str| {
            let out = cachecore_output_within(args, b"", limit);
            let line = assert_clean_error(&out, &args.join(" "));
            assert!(line.contains(key) && line.contains(&refused), "{line}");
        };
        // `verify DIR` reports `key` as a problem of the cache (exit status 1).
        let reported = |dir: &Path, key: &str| {
            let out = cachecore_output_within(&["verify", path_str(dir)], b"", limit);
            assert_no_panic(&out, "verify");
            assert_eq!(out.status.code(), Some(1), "{out:?}");
            let report = [out.stdout.as_slice(), out.stderr.as_slice()].concat();
            let report = String::from_utf8_lossy(&report);
            assert!(
                report.contains(key) && report.contains(&refused),
                "{report}"
            );
        };

        // A's narinfo: `ls` of the cache and of A fail naming it; `verify` reports it.
        let dir = f.tmp.path().join(format!("special-narinfo-{what}"));
        copy_dir(&f.base, &dir);
        replace_with_special(&dir.join(&narinfo), socket);
        fails(&["ls", path_str(&dir)], &narinfo);
        fails(&["ls", path_str(&dir), &f.a], &narinfo);
        reported(&dir, &narinfo);

        // A's listing: `ls` of A fails naming it.
        let dir = f.tmp.path().join(format!("special-listing-{what}"));
        copy_dir(&f.base, &dir);
        replace_with_special(&dir.join(&listing), socket);
        fails(&["ls", path_str(&dir), &f.a], &listing);

        // A's NAR: `cat` of a file in it fails naming it; `verify` reports it.
        let dir = f.tmp.path().join(format!("special-nar-{what}"));
        copy_dir(&f.base, &dir);
        replace_with_special(&dir.join(&info.url), socket);
        fails(&["cat", path_str(&dir), &file], &info.url);
        reported(&dir, &info.url);
    }
}

// ---------------------------------------------------------------------------------------------
// Racing pushes
// ---------------------------------------------------------------------------------------------

/// The object key of a request line of S3's (`PUT /nixcache/nar/x.nar.zst?uploadId=… HTTP/1.1`):
/// `nar/x.nar.zst`.
fn s3_key(line: &str) -> String {
    let target = line.split_whitespace().nth(1).unwrap_or_default();
    let path = target.split('?').next().unwrap_or_default();
    path.trim_start_matches('/')
        .split_once('/')
        .map_or_else(String::new, |(_bucket, key)| key.to_owned())
}

/// Four pushes of one large path (streamed, so its NAR's key is not the hash of its bytes) with
/// four compression levels race into one bucket. Each goes through a gate of its own that holds
/// its narinfo write: the race is made, not hoped for — every push has uploaded its NAR before
/// any narinfo is written. Two are killed (SIGKILL) there; the other two are let go one after
/// the other, and after each the narinfo in the bucket names the object that push wrote and
/// verifies. A push writing every level's NAR to one key (`nar/<NarHash>.nar.zst`) fails here:
/// whichever NAR landed last, one released narinfo describes another push's bytes.
#[test]
fn racing_pushes_with_other_settings_leave_every_narinfo_matching_its_object() {
    use std::os::unix::process::ExitStatusExt as _;
    use std::time::Duration;
    let tmp = tempdir();
    // A path large enough to be streamed (over 4 MiB), compressible so levels differ in size.
    let src = tmp.path().join("large");
    fs::create_dir(&src).unwrap();
    let mut data = Vec::new();
    for i in 0..(6 << 20) / 64 {
        data.extend_from_slice(format!("{i:063}\n").as_bytes());
    }
    fs::write(src.join("data"), &data).unwrap();
    let garage = Garage::start();
    let server = garage.endpoint.strip_prefix("http://").unwrap().to_owned();
    let is_narinfo_write =
        |line: &str| line.starts_with("PUT ") && s3_key(line).ends_with(".narinfo");
    let mut racers = Vec::new();
    for level in ["1", "19", "3", "12"] {
        let gate = common::gate::Gate::start(&server);
        gate.hold(common::gate::Stop::Request, move |r| {
            is_narinfo_write(r.line)
        });
        let url = format!(
            "s3://{}?endpoint={}&region={}",
            garage.bucket,
            gate.url(),
            common::garage::REGION
        );
        let child = cachecore_command()
            .args(["push", &url, "--add", path_str(&src), "--level", level])
            .envs(garage.env())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        racers.push((level, gate, child));
    }
    // The barrier: every push has uploaded its NAR and waits to write its narinfo.
    let mut nar_keys = Vec::new();
    for (level, gate, _) in &racers {
        let held = gate.wait_held(1, Duration::from_secs(300));
        assert_eq!(held.len(), 1, "level {level}: {held:?}");
        let writes: BTreeMap<String, ()> = gate
            .requests()
            .iter()
            .filter(|l| !l.starts_with("GET ") && !l.starts_with("HEAD "))
            .map(|l| (s3_key(l), ()))
            // A NAR's signed frame digests (`nar/<hash>.frames`) are named by their content.
            .filter(|(k, _)| k.starts_with("nar/") && !k.ends_with(".frames"))
            .collect();
        let keys: Vec<String> = writes.into_keys().collect();
        assert_eq!(keys.len(), 1, "level {level} wrote NARs {keys:?}");
        nar_keys.push(keys[0].clone());
    }
    let distinct: std::collections::BTreeSet<&String> = nar_keys.iter().collect();
    assert_eq!(
        distinct.len(),
        racers.len(),
        "the racing pushes wrote their NARs to shared keys: {nar_keys:?}"
    );
    let narinfo_url = || {
        let cache =
            cachecore::store::BinaryCache::open_with_env(&garage.url(""), &garage.env()).unwrap();
        let rt = cachecore::ops::runtime().unwrap();
        let hash = rt
            .block_on(async {
                use futures::StreamExt as _;
                cache.list_narinfo_hashes().collect::<Vec<_>>().await
            })
            .into_iter()
            .map(Result::unwrap)
            .collect::<Vec<_>>();
        assert_eq!(hash.len(), 1, "{hash:?}");
        rt.block_on(cache.narinfo_by_hash(&hash[0]))
            .unwrap()
            .unwrap()
            .url
    };
    let verify = |what: &str| {
        let out = cachecore_command()
            .args(["verify", &garage.url("")])
            .envs(garage.env())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    for (i, ((level, gate, mut child), nar_key)) in racers.into_iter().zip(&nar_keys).enumerate() {
        if i % 2 == 0 {
            // Killed with its narinfo write held: nothing of that write reaches the bucket.
            child.kill().unwrap();
            let status = child.wait().unwrap();
            assert_eq!(status.signal(), Some(9), "level {level}: {status:?}");
            gate.discard();
        } else {
            gate.release();
            let out = child.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "level {level}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // Its narinfo is the one in the bucket now, names its own object, and checks out.
            assert_eq!(&narinfo_url(), nar_key, "level {level}");
            verify(&format!("after the push at level {level}"));
        }
    }
    // And a later push with yet another level leaves it so.
    let out = cachecore_command()
        .args([
            "push",
            &garage.url(""),
            "--add",
            path_str(&src),
            "--level",
            "7",
        ])
        .envs(garage.env())
        .output()
        .unwrap();
    assert_cachecore_ok(&out, &["push", "--add", "--level", "7"]);
    verify("after a later push");
}

// ---------------------------------------------------------------------------------------------
// Terminal hygiene: a cache's text never reaches the terminal raw
// ---------------------------------------------------------------------------------------------

/// Terminal controls a cache can plant: clear the screen, set the window title (ESC ] … BEL),
/// go back to the start of the line (CR) to overwrite it, a newline to forge a line, the
/// one-character CSI of C1 (U+009B), and a right-to-left override.
const CONTROLS: &str = "\x1b[2J\x1b]0;pwned\x07\rall good\n\u{9b}31m\u{202e}";

/// The first raw terminal control in `bytes` (tab and newline allowed: they separate lines
/// and columns), as (offset, character).
fn raw_control(bytes: &[u8]) -> Option<(usize, char)> {
    String::from_utf8_lossy(bytes)
        .char_indices()
        .find(|&(_, c)| {
            (c.is_control() && c != '\n' && c != '\t')
                || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
        })
}

#[track_caller]
fn assert_no_raw_control(out: &Output, what: &str) {
    assert_no_panic(out, what);
    for (stream, bytes) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        if let Some((at, c)) = raw_control(bytes) {
            panic!(
                "`{what}`: {stream} holds the raw control {c:?} at byte {at}:\n{}",
                String::from_utf8_lossy(bytes).escape_debug()
            );
        }
    }
}

#[test]
fn a_caches_text_reaches_the_terminal_escaped() {
    let tmp = tempdir();
    // A path whose file names and symlink target carry terminal controls, next to a name in
    // other scripts that must stay readable; signed, then its signature's key name replaced
    // by one carrying the same controls.
    let src = tmp.path().join("src");
    fs::create_dir(&src).unwrap();
    fs::write(src.join(format!("evil{CONTROLS}file")), b"x\n").unwrap();
    fs::write(src.join("Überblick-日本.txt"), b"y\n").unwrap();
    std::os::unix::fs::symlink(format!("target{CONTROLS}"), src.join("link")).unwrap();
    let secret = tmp.path().join("k.sec");
    cachecore_ok(
        &["key", "generate", "honest-1", "--out", path_str(&secret)],
        b"",
    );
    let other = tmp.path().join("other.sec");
    cachecore_ok(
        &["key", "generate", "other-1", "--out", path_str(&other)],
        b"",
    );
    let trusted = String::from_utf8(cachecore_ok(&["key", "public", path_str(&other)], b""))
        .unwrap()
        .trim()
        .to_owned();
    let root = tmp.path().join("served");
    let cache = root.join("cache");
    let path = String::from_utf8(cachecore_ok(
        &[
            "push",
            path_str(&cache),
            "--add",
            path_str(&src),
            "--key",
            path_str(&secret),
            "--quiet",
        ],
        b"",
    ))
    .unwrap()
    .trim()
    .to_owned();
    let hash = hash_part_of(&path);
    let key_name = format!("evil{}-1", CONTROLS.replace('\n', ""));
    edit_narinfo_text(&cache, &hash, |t| {
        t.replace("Sig: honest-1:", &format!("Sig: {key_name}:"))
    });
    assert!(fs::read_to_string(cache.join(format!("{hash}.narinfo")))
        .unwrap()
        .contains(&key_name));
    let info_file = cache.join("nix-cache-info");
    let mut info = fs::read_to_string(&info_file).unwrap();
    info.push_str(&format!("X-Note: {}\n", CONTROLS.replace('\n', "")));
    fs::write(&info_file, info).unwrap();

    let server = HttpServer::serve(&root);
    let http = format!("{}/cache", server.url());
    for url in [path_str(&cache), http.as_str()] {
        let what = |cmd: &str| format!("{cmd} over {url}");
        // ls: every name shown, escaped; other scripts as they are.
        let out = cachecore_output(&["ls", url, &path], b"");
        assert_cachecore_ok(&out, &["ls", url, &path]);
        assert_no_raw_control(&out, &what("ls"));
        let shown = String::from_utf8(out.stdout).unwrap();
        assert!(
            shown.contains(r"evil\x1b[2J\x1b]0;pwned\x07\rall good\n\u{9b}31m\u{202e}file")
                && shown.contains(r"link -> target\x1b[2J")
                && shown.contains("Überblick-日本.txt"),
            "ls over {url} shows:\n{shown}"
        );
        // pull, copy and verify refuse the signature, naming its key escaped.
        let dest = tmp.path().join("pulled");
        let out = cachecore_output(
            &[
                "pull",
                url,
                &path,
                path_str(&dest),
                "--trusted-key",
                &trusted,
            ],
            b"",
        );
        assert_no_raw_control(&out, &what("pull"));
        let line = assert_clean_error(&out, &what("pull"));
        assert!(
            line.contains(r"evil\x1b[2J\x1b]0;pwned\x07\rall good"),
            "{line}"
        );
        let out = cachecore_output(
            &[
                "copy",
                url,
                path_str(&tmp.path().join("copied")),
                &path,
                "--trusted-key",
                &trusted,
            ],
            b"",
        );
        assert_no_raw_control(&out, &what("copy"));
        let line = assert_clean_error(&out, &what("copy"));
        assert!(line.contains(r"evil\x1b[2J"), "{line}");
        let out = cachecore_output(&["verify", url, &path, "--trusted-key", &trusted], b"");
        assert_no_raw_control(&out, &what("verify"));
        assert_eq!(out.status.code(), Some(1), "{}", what("verify"));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(r"evil\x1b[2J"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
    }
    // info (a directory can be listed; plain HTTP cannot).
    let out = cachecore_output(&["info", path_str(&cache)], b"");
    assert_cachecore_ok(&out, &["info", path_str(&cache)]);
    assert_no_raw_control(&out, "info");
    assert!(String::from_utf8_lossy(&out.stdout).contains(r"X-Note: \x1b[2J"));
    // nar ls of the same tree packed locally: a NAR file is untrusted too.
    let nar = tmp.path().join("evil.nar");
    fs::write(&nar, cachecore_ok(&["nar", "pack", path_str(&src)], b"")).unwrap();
    let out = cachecore_output(&["nar", "ls", path_str(&nar)], b"");
    assert_cachecore_ok(&out, &["nar", "ls", path_str(&nar)]);
    assert_no_raw_control(&out, "nar ls");
}
