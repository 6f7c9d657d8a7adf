//! `cachecore mount` for real: the kernel's FUSE (`/dev/fuse`, `fusermount3`), real Nix filling
//! caches, real HTTP servers. Every mount is unmounted by a drop guard (`fusermount3 -u -z`),
//! so a failed assertion never leaves a dead mount behind.

#![cfg(all(feature = "mount", target_os = "linux"))]
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use cachecore_testkit::http_server::HttpServer;
use cachecore_testkit::nix::{
    build_closure_expr, nix, nix_copy_to_file, nix_generate_key, nix_store_add,
};
use cachecore_testkit::tree::{
    make_fixture_tree, make_world_readable, path_str, tempdir, write_mode,
};
use common::*;

/// FUSE must be there: a missing part is a failure, not a skip.
fn require_fuse() {
    assert!(
        Path::new("/dev/fuse").exists(),
        "/dev/fuse is missing: these tests mount for real (a container needs --device /dev/fuse)"
    );
    let found = Command::new("fusermount3").arg("-V").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "fusermount3 is missing: apt-get install -y fuse3"
    );
}

fn is_mounted(mountpoint: &Path) -> bool {
    let mounts = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = mountpoint.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(want))
}

/// A running `cachecore mount`, unmounted (`fusermount3 -u -z`) and stopped when dropped.
struct Mount {
    child: Option<Child>,
    mountpoint: PathBuf,
    log: PathBuf,
}

impl Mount {
    /// `cachecore ARGS…` (`mount STORE MOUNTPOINT …`), waited for until MOUNTPOINT is mounted.
    fn start(mountpoint: &Path, args: &[&str]) -> Mount {
        Mount::start_with_env(mountpoint, args, &[])
    }

    /// [`start`](Self::start) with `env` added (a store's credentials).
    fn start_with_env(mountpoint: &Path, args: &[&str], env: &[(String, String)]) -> Mount {
        fs::create_dir_all(mountpoint).unwrap();
        let log = mountpoint.with_extension("log");
        let mut cmd = cachecore_command();
        cmd.args(args)
            .envs(env.iter().cloned())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(fs::File::create(&log).unwrap());
        let child = cmd.spawn().expect("cannot start cachecore mount");
        let mut mount = Mount {
            child: Some(child),
            mountpoint: mountpoint.to_owned(),
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !is_mounted(mountpoint) {
            if let Some(status) = mount.child.as_mut().unwrap().try_wait().unwrap() {
                panic!("cachecore mount exited with {status}: {}", mount.log());
            }
            assert!(
                Instant::now() < deadline,
                "not mounted after 30 s: {}",
                mount.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        mount
    }

    fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.mountpoint.join(rel)
    }

    /// Waits for the process to end (after an unmount or a signal); its exit status.
    fn wait(&mut self, limit: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        cachecore_testkit::process::wait_with_timeout(&mut child, limit, "cachecore mount")
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("fusermount3")
            .args(["-u", "-z", "-q"])
            .arg(&self.mountpoint)
            .status();
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `find DIR -printf` of what a tree holds: type, mode, size (not of directories), name, link
/// target, sorted.
fn tree_shape(dir: &Path) -> String {
    let out = Command::new("find")
        .arg(dir)
        .args(["-mindepth", "1", "-printf", "%y %m %s %P -> %l\n"])
        .output()
        .unwrap();
    assert!(out.status.success(), "find {}: {out:?}", dir.display());
    let mut lines: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            // A directory's size is the filesystem's business.
            let mut parts: Vec<&str> = l.splitn(4, ' ').collect();
            if parts[0] == "d" {
                parts[2] = "-";
            }
            parts.join(" ")
        })
        .collect();
    lines.sort();
    lines.join("\n")
}

/// The mounted store path equals the one in the Nix store: contents (`diff -r
/// --no-dereference`), modes, sizes and symlink targets.
fn assert_same_as_store(store_path: &str, mounted: &Path) {
    let diff = Command::new("diff")
        .args(["-r", "--no-dereference"])
        .arg(store_path)
        .arg(mounted)
        .output()
        .unwrap();
    assert!(
        diff.status.success(),
        "diff -r {store_path} {}: {}{}",
        mounted.display(),
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    assert_eq!(
        tree_shape(Path::new(store_path)),
        tree_shape(mounted),
        "{store_path}"
    );
}

fn base(store_path: &str) -> &str {
    store_path.rsplit('/').next().unwrap()
}

/// A fixture store path with every kind of entry, an executable script and a 24 MiB file that
/// does not compress (six 4 MiB frames in a seekable `.nar.zst`) after a small one.
fn fixture_path(dir: &Path) -> String {
    let tree = make_fixture_tree(dir);
    write_mode(&tree.join("a-small-file"), b"a small file\n", 0o644);
    write_mode(
        &tree.join("z-large"),
        &cachecore_testkit::data::pseudo_random_bytes(24 << 20, 5),
        0o644,
    );
    make_world_readable(&tree);
    nix_store_add(&tree)
}

/// A store path as `nix-store --add` makes it of a new directory `dir` holding `files` (name,
/// contents; mode 0644).
fn store_path_of(dir: &Path, files: &[(&str, &[u8])]) -> String {
    fs::create_dir(dir).unwrap();
    for (name, contents) in files {
        write_mode(&dir.join(name), contents, 0o644);
    }
    make_world_readable(dir);
    nix_store_add(dir)
}

fn cat(path: &Path) -> Output {
    Command::new("cat").arg(path).output().unwrap()
}

#[test]
fn a_pushed_cache_mounts_as_the_store_over_a_directory_and_over_cachecore_serve() {
    require_fuse();
    let work = tempdir();
    let built = build_closure_expr(work.path(), "mount", None);
    let fixture = fixture_path(work.path());
    let (secret, public) = nix_generate_key(work.path(), "mount-test-1");
    let cache = work.path().join("cache");
    let cache_url = path_str(&cache);
    cachecore_ok(&["init", cache_url], b"");
    cachecore_ok(
        &[
            "push",
            cache_url,
            &built.app,
            &fixture,
            "--key",
            path_str(&secret),
            "-q",
        ],
        b"",
    );
    let closure: Vec<String> = nix("nix-store", &["-qR", &built.app])
        .lines()
        .map(str::to_owned)
        .collect();

    // Over the directory: the root lists every path; each is the store path.
    let mnt = work.path().join("mnt");
    let mut mount = Mount::start(
        &mnt,
        &[
            "mount",
            cache_url,
            path_str(&mnt),
            "--trusted-key",
            &public,
            "--cache-dir",
            path_str(&work.path().join("nars")),
        ],
    );
    let mut listed: Vec<String> = fs::read_dir(&mnt)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    listed.sort();
    let mut expected: Vec<String> = closure
        .iter()
        .chain([&fixture])
        .map(|p| base(p).to_owned())
        .collect();
    expected.sort();
    assert_eq!(listed, expected);
    for path in closure.iter().chain([&fixture]) {
        assert_same_as_store(path, &mount.path(base(path)));
    }
    // An executable runs from the mount.
    let run = Command::new(mount.path(base(&fixture)).join("exec.sh"))
        .output()
        .unwrap();
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout, b"hello\n");
    // A path that is not there, and a name that is no store path.
    assert!(!mount.path("00000000000000000000000000000000-nope").exists());
    assert!(!mount.path("nope").exists());
    // `fusermount3 -u` ends the mount and the process, cleanly.
    let status = Command::new("fusermount3")
        .arg("-u")
        .arg(&mnt)
        .status()
        .unwrap();
    assert!(status.success());
    let status = mount.wait(Duration::from_secs(10));
    assert!(status.success(), "{status}: {}", mount.log());
    assert!(!is_mounted(&mnt));

    // Over `cachecore serve` (HTTP: cannot list, paths appear when looked up by name).
    let mut serve = cachecore_command()
        .args(["serve", cache_url, "--listen", "127.0.0.1:0"])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let url = {
        use std::io::BufRead as _;
        let mut line = String::new();
        std::io::BufReader::new(serve.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        line.trim()
            .strip_prefix("cachecore serve: listening on ")
            .unwrap_or_else(|| panic!("serve printed {line:?}"))
            .to_owned()
    };
    let mnt = work.path().join("mnt-http");
    let mount = Mount::start(
        &mnt,
        &[
            "mount",
            &url,
            path_str(&mnt),
            "--trusted-key",
            &public,
            "--cache-dir",
            path_str(&work.path().join("nars")),
        ],
    );
    assert_eq!(
        fs::read_dir(&mnt).unwrap().count(),
        0,
        "nothing looked up yet"
    );
    assert_same_as_store(&built.app, &mount.path(base(&built.app)));
    assert_same_as_store(&fixture, &mount.path(base(&fixture)));
    let listed = fs::read_dir(&mnt).unwrap().count();
    assert_eq!(listed, 2, "the root lists what was looked up");
    drop(mount);
    let _ = serve.kill();
    let _ = serve.wait();
}

#[test]
fn a_cache_written_by_nix_copy_mounts_as_the_store() {
    require_fuse();
    let work = tempdir();
    let built = build_closure_expr(work.path(), "mount-nix", None);
    let (secret, public) = nix_generate_key(work.path(), "mount-nix-1");
    let cache = work.path().join("cache");
    // Nix's defaults: xz, with listings; signed.
    nix_copy_to_file(
        &cache,
        &format!("write-nar-listing=true&secret-key={}", secret.display()),
        &[&built.app],
    );
    let closure: Vec<String> = nix("nix-store", &["-qR", &built.app])
        .lines()
        .map(str::to_owned)
        .collect();
    let nars = work.path().join("nars");
    let mnt = work.path().join("mnt");
    let mount = Mount::start(
        &mnt,
        &[
            "mount",
            path_str(&cache),
            path_str(&mnt),
            "--trusted-key",
            &public,
            "--cache-dir",
            path_str(&nars),
        ],
    );
    for path in &closure {
        assert_same_as_store(path, &mount.path(base(path)));
    }
    // Each NAR was fetched once, checked, and kept.
    assert_eq!(fs::read_dir(&nars).unwrap().count(), closure.len());
    drop(mount);

    // Nix's zstd without listings, unsigned: --no-check-sigs; the tree comes from the NAR. Two
    // paths too large to be read whole in one request (over 64 KiB compressed).
    let blobs: Vec<String> = (0..2u64)
        .map(|i| {
            let data = cachecore_testkit::data::pseudo_random_bytes(200_000, 11 + i);
            store_path_of(&work.path().join(format!("blob{i}")), &[("data", &data)])
        })
        .collect();
    let plain = work.path().join("cache-zstd");
    nix_copy_to_file(
        &plain,
        "compression=zstd",
        &[&built.app, &blobs[0], &blobs[1]],
    );
    // Nix's zstd cannot be read at random: a large NAR is fetched once into the cache directory,
    // which --cache-size bounds (here to one NAR: the one just fetched).
    let mnt = work.path().join("mnt-zstd");
    let small_nars = work.path().join("small-nars");
    let mount = Mount::start(
        &mnt,
        &[
            "mount",
            path_str(&plain),
            path_str(&mnt),
            "--no-check-sigs",
            "--cache-dir",
            path_str(&small_nars),
            "--cache-size",
            "1",
        ],
    );
    for path in closure.iter().chain(&blobs) {
        assert_same_as_store(path, &mount.path(base(path)));
    }
    assert_eq!(fs::read_dir(&small_nars).unwrap().count(), 1);
    drop(mount);
    // Without --no-check-sigs, unsigned paths do not appear.
    let mnt = work.path().join("mnt-unsigned");
    let mount = Mount::start(
        &mnt,
        &[
            "mount",
            path_str(&plain),
            path_str(&mnt),
            "--trusted-key",
            &public,
            "--cache-dir",
            path_str(&nars),
        ],
    );
    assert_eq!(fs::read_dir(&mnt).unwrap().count(), 0);
    assert!(!mount.path(base(&built.app)).exists());
}

#[test]
fn a_small_file_in_a_large_nar_fetches_one_frame_and_listing_fetches_no_nar_byte() {
    require_fuse();
    let work = tempdir();
    let fixture = fixture_path(work.path());
    let cache = work.path().join("cache");
    cachecore_ok(&["init", path_str(&cache)], b"");
    cachecore_ok(&["push", path_str(&cache), &fixture, "-q"], b"");
    let server = HttpServer::serve(&cache);
    let mnt = work.path().join("mnt");
    let mount = Mount::start(
        &mnt,
        &[
            "mount",
            &server.url(),
            path_str(&mnt),
            "--no-check-sigs",
            "--cache-dir",
            path_str(&work.path().join("nars")),
            "--memory",
            "67108864",
        ],
    );
    let nar_bytes = || nar_served(&server);
    let root = mount.path(base(&fixture));
    // `ls -lR` and `find` read listings only.
    let ls = Command::new("ls").arg("-lR").arg(&root).output().unwrap();
    assert!(ls.status.success());
    assert!(String::from_utf8_lossy(&ls.stdout).contains("z-large"));
    assert_eq!(
        nar_bytes(),
        (0, 0),
        "listing a store path fetched NAR bytes"
    );
    // One small file: the seek table (a 64 KiB probe of the object's end) and one frame.
    let out = cat(&root.join("a-small-file"));
    assert_eq!(out.stdout, b"a small file\n");
    let (requests, bytes) = nar_bytes();
    let object_size: u64 = fs::read_dir(cache.join("nar"))
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .max()
        .unwrap();
    assert!(object_size > 24 << 20);
    assert!(
        bytes <= (4 << 20) + (64 << 10) + 4096 && requests <= 2,
        "{requests} requests, {bytes} bytes of a {object_size}-byte NAR for a 13-byte file"
    );
    // The large file reads whole and right (sequential reads, with read-ahead).
    let large = fs::read(root.join("z-large")).unwrap();
    assert!(large == cachecore_testkit::data::pseudo_random_bytes(24 << 20, 5));
    let (_, bytes) = nar_bytes();
    assert!(
        bytes < object_size + (5 << 20),
        "reading the large file fetched {bytes} bytes of a {object_size}-byte object"
    );
}

#[test]
fn a_flipped_byte_is_eio_with_check_nar_never_wrong_bytes() {
    require_fuse();
    let work = tempdir();
    let path = store_path_of(&work.path().join("flip"), &[("file", b"the right bytes\n")]);
    let (secret, public) = nix_generate_key(work.path(), "flip-1");
    let cache = work.path().join("cache");
    cachecore_ok(&["init", path_str(&cache)], b"");
    cachecore_ok(
        &[
            "push",
            path_str(&cache),
            &path,
            "--key",
            path_str(&secret),
            "--compression",
            "none",
            "-q",
        ],
        b"",
    );
    // Flip one byte of the file's contents in the NAR object (uncompressed: it still reads).
    let nar = fs::read_dir(cache.join("nar"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    let mut bytes = fs::read(&nar).unwrap();
    let at = bytes.windows(5).position(|w| w == b"right").unwrap();
    bytes[at] = b'w';
    fs::write(&nar, &bytes).unwrap();

    let mnt = work.path().join("mnt");
    let mount = Mount::start(
        &mnt,
        &[
            "mount",
            path_str(&cache),
            path_str(&mnt),
            "--trusted-key",
            &public,
            "--check",
            "nar",
            "--cache-dir",
            path_str(&work.path().join("nars")),
        ],
    );
    let out = cat(&mount.path(base(&path)).join("file"));
    assert!(!out.status.success());
    assert!(
        out.stdout.is_empty(),
        "wrong bytes served: {:?}",
        out.stdout
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
    // One log line naming what failed; the mount is still up.
    let log = mount.log();
    assert!(log.contains("is corrupt"), "{log}");
    // A line per failed read (cat and the kernel may try again), each about this path.
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert!(!warnings.is_empty());
    assert!(
        warnings
            .iter()
            .all(|l| l.contains(base(&path)) && l.contains("corrupt")),
        "{log}"
    );
    assert!(is_mounted(&mnt));
    // Nothing unchecked was kept.
    assert_eq!(fs::read_dir(work.path().join("nars")).unwrap().count(), 0);
}

#[test]
fn sigterm_unmounts_with_a_reader_open_and_a_remount_reuses_the_cache_dir() {
    require_fuse();
    let work = tempdir();
    let data = cachecore_testkit::data::pseudo_random_bytes(300_000, 9);
    let path = store_path_of(&work.path().join("kept"), &[("file", &data)]);
    let (secret, public) = nix_generate_key(work.path(), "kept-1");
    let cache = work.path().join("cache");
    cachecore_ok(&["init", path_str(&cache)], b"");
    cachecore_ok(
        &[
            "push",
            path_str(&cache),
            &path,
            "--key",
            path_str(&secret),
            "-q",
        ],
        b"",
    );
    let server = HttpServer::serve(&cache);
    let nars = work.path().join("nars");
    let args = ["--trusted-key", &public, "--cache-dir", path_str(&nars)];
    let mnt = work.path().join("mnt");
    let file = mnt.join(base(&path)).join("file");
    let expected = data;

    let mut mount = Mount::start(
        &mnt,
        &[&["mount", &server.url(), path_str(&mnt)][..], &args[..]].concat(),
    );
    assert!(fs::read(&file).unwrap() == expected);
    let fetched: u64 = server
        .served()
        .iter()
        .filter(|(k, _)| k.starts_with("nar/"))
        .map(|(_, (_, b))| b)
        .sum();
    assert!(fetched > 0);
    // A reader holds the file open; SIGTERM detaches the mount at once and ends the process.
    let mut reader = Command::new("sh")
        .arg("-c")
        .arg(format!("exec 3< '{}'; sleep 30", file.display()))
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let pid = mount.child.as_ref().unwrap().id();
    Command::new("kill").arg(pid.to_string()).status().unwrap();
    let status = mount.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(143), "{}", mount.log());
    assert!(!is_mounted(&mnt));
    let _ = reader.kill();
    let _ = reader.wait();
    drop(mount);

    // Mounted again: the NAR comes from the cache directory, not the server.
    server.reset_counts();
    let _mount = Mount::start(
        &mnt,
        &[&["mount", &server.url(), path_str(&mnt)][..], &args[..]].concat(),
    );
    assert!(fs::read(&file).unwrap() == expected);
    let fetched: u64 = server
        .served()
        .iter()
        .filter(|(k, _)| k.starts_with("nar/"))
        .map(|(_, (_, b))| b)
        .sum();
    assert_eq!(fetched, 0, "the kept NAR was fetched again");
}

/// `cachecore serve STORE --listen 127.0.0.1:PORT`, once it listens.
fn serve_on(store: &str, port: u16) -> Child {
    serve_with(store, port, &[])
}

/// [`serve_on`] with `extra` arguments.
fn serve_with(store: &str, port: u16, extra: &[&str]) -> Child {
    let mut child = cachecore_command()
        .args(["serve", store, "--listen", &format!("127.0.0.1:{port}")])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::BufRead as _;
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.contains("listening on"), "serve printed {line:?}");
    child
}

#[test]
fn a_backend_failure_is_eio_for_that_read_and_the_mount_recovers() {
    require_fuse();
    let work = tempdir();
    let paths: Vec<String> = (0..2)
        .map(|i| {
            let text = format!("part {i}\n");
            store_path_of(
                &work.path().join(format!("part{i}")),
                &[("file", text.as_bytes())],
            )
        })
        .collect();
    let cache = work.path().join("cache");
    cachecore_ok(&["init", path_str(&cache)], b"");
    cachecore_ok(&["push", path_str(&cache), &paths[0], &paths[1], "-q"], b"");
    let port = cachecore_testkit::net::free_port();
    let url = format!("http://127.0.0.1:{port}");
    let mut server = serve_on(path_str(&cache), port);
    let mnt = work.path().join("mnt");
    let mount = Mount::start(
        &mnt,
        &[
            "mount",
            &url,
            path_str(&mnt),
            "--no-check-sigs",
            "--cache-dir",
            path_str(&work.path().join("nars")),
        ],
    );
    let first = mount.path(base(&paths[0])).join("file");
    let second = mount.path(base(&paths[1])).join("file");
    assert_eq!(fs::read(&first).unwrap(), b"part 0\n");
    // The second path is looked up (narinfo and listing read), not read yet.
    assert_eq!(fs::metadata(&second).unwrap().len(), 7);
    // The server goes away: reading the second file fails with EIO, once, with a log line.
    server.kill().unwrap();
    server.wait().unwrap();
    let out = cat(&second);
    assert!(!out.status.success() && out.stdout.is_empty(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
    assert!(mount.log().contains("WARN"), "{}", mount.log());
    assert!(is_mounted(&mnt));
    // What was read before is still there; the server comes back and the read succeeds.
    assert_eq!(fs::read(&first).unwrap(), b"part 0\n");
    let mut server = serve_on(path_str(&cache), port);
    assert_eq!(fs::read(&second).unwrap(), b"part 1\n");
    drop(mount);
    let _ = server.kill();
    let _ = server.wait();
}

#[test]
fn a_cache_in_garage_mounts_as_the_store() {
    require_fuse();
    let work = tempdir();
    let fixture = fixture_path(work.path());
    let (secret, public) = nix_generate_key(work.path(), "garage-mount-1");
    let garage = cachecore_testkit::garage::Garage::start();
    let url = garage.url("mount");
    let run = |args: &[&str]| {
        let out = cachecore_command()
            .args(args)
            .envs(garage.env())
            .output()
            .unwrap();
        assert_cachecore_ok(&out, args);
    };
    run(&["init", &url]);
    run(&["push", &url, &fixture, "--key", path_str(&secret), "-q"]);
    // Ranged reads of the frames (S3 ranged GETs), unchecked and checked against the signed
    // frame digests (the default with a trusted key), and the whole NAR checked (--check nar).
    let nars = work.path().join("nars");
    for name in ["ranges", "frames", "nar"] {
        let mnt = work.path().join(format!("mnt-{name}"));
        let mut args = vec![
            "mount",
            &url,
            path_str(&mnt),
            "--cache-dir",
            path_str(&nars),
        ];
        match name {
            "ranges" => args.push("--no-check-sigs"),
            "frames" => args.extend(["--trusted-key", &public]),
            _ => args.extend(["--trusted-key", &public, "--check", "nar"]),
        }
        let mount = Mount::start_with_env(&mnt, &args, &garage.env());
        let listed: Vec<String> = fs::read_dir(&mnt)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert_eq!(listed, [base(&fixture)]);
        assert_same_as_store(&fixture, &mount.path(base(&fixture)));
    }
}

/// The NAR object of a cache directory holding one path.
fn nar_object(cache: &Path) -> PathBuf {
    fs::read_dir(cache.join("nar"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| !p.to_string_lossy().ends_with(".frames"))
        .unwrap()
}

/// The fixture path pushed by `cachecore push --key` (with `args`) into a new cache directory
/// under `dir`: the path, the secret key's file, the public key and the cache.
fn signed_fixture(dir: &Path, key_name: &str, args: &[&str]) -> (String, PathBuf, String, PathBuf) {
    let fixture = fixture_path(dir);
    let (secret, public) = nix_generate_key(dir, key_name);
    let cache = dir.join("cache");
    cachecore_ok(&["init", path_str(&cache)], b"");
    let push = [
        &[
            "push",
            path_str(&cache),
            &fixture,
            "--key",
            path_str(&secret),
            "-q",
        ][..],
        args,
    ]
    .concat();
    cachecore_ok(&push, b"");
    (fixture, secret, public, cache)
}

#[test]
fn check_frames_reads_only_signed_frames_serves_no_changed_byte_and_nix_still_substitutes() {
    require_fuse();
    let work = tempdir();
    let (fixture, secret, public, cache) = signed_fixture(work.path(), "frames-1", &[]);
    // The signed frame digests ride in narinfo fields Nix ignores: real Nix still substitutes
    // a path carrying them, requiring signatures (and refuses it trusting another key). An
    // input-addressed path (Nix takes a content-addressed one unsigned): ~10 MB of text, three
    // frames.
    let n = cachecore_testkit::nix::nonce();
    let built = cachecore_testkit::nix::nix_build_scripts(
        work.path(),
        &[(
            "cachecore-frames-nix",
            format!(
                "i=0; while [ $i -lt 200000 ]; do echo \"line $i of {n}, long enough to fill frames\"; \
                 i=$((i+1)); done > $out"
            ),
        )],
    );
    cachecore_ok(
        &[
            "push",
            path_str(&cache),
            &built[0],
            "--key",
            path_str(&secret),
            "-q",
        ],
        b"",
    );
    for path in [&fixture, &built[0]] {
        let hash_part = &base(path)[..32];
        let narinfo = fs::read_to_string(cache.join(format!("{hash_part}.narinfo"))).unwrap();
        for field in [
            "FramesHash: sha256:",
            "ListingHash: sha256:",
            "FramesSig: frames-1:",
        ] {
            assert!(narinfo.contains(field), "{narinfo}");
        }
    }
    fs::create_dir_all(work.path().join("nix")).unwrap();
    cachecore_testkit::nix::assert_nix_substitutes(
        &format!("file://{}", cache.display()),
        &work.path().join("nix"),
        std::slice::from_ref(&built[0]),
        &public,
    );
    let hash_part = &base(&fixture)[..32];

    let server = HttpServer::serve(&cache);
    let nars = work.path().join("nars");
    // Each mount its own --cache-dir, unless `dir` names one.
    let mount_in = |name: &str, dir: Option<&Path>| {
        let mnt = work.path().join(name);
        let own = work.path().join(format!("nars-{name}"));
        let m = Mount::start(
            &mnt,
            &[
                "mount",
                &server.url(),
                path_str(&mnt),
                "--trusted-key",
                &public,
                "--cache-dir",
                path_str(dir.unwrap_or(&own)),
            ],
        );
        (m, mnt)
    };
    let mount_at = |name: &str| mount_in(name, None);
    let nar_bytes = || nar_served(&server);
    let (mount, _) = mount_in("mnt", Some(&nars));
    let root = mount.path(base(&fixture));
    let ls = Command::new("ls").arg("-lR").arg(&root).output().unwrap();
    assert!(ls.status.success(), "{ls:?}");
    assert_eq!(nar_bytes(), (0, 0), "listing fetched NAR bytes");
    // A small file: the seek table probe, the frame digests and one frame, all checked.
    assert_eq!(cat(&root.join("a-small-file")).stdout, b"a small file\n");
    let (requests, bytes) = nar_bytes();
    assert!(
        requests <= 3 && bytes <= (4 << 20) + (64 << 10) + 8192,
        "{requests} requests, {bytes} bytes for a 13-byte file"
    );
    assert_same_as_store(&fixture, &root);
    // No whole NAR was fetched to check anything; every frame read was kept, named by its
    // signed digest.
    assert_eq!(kept_nars(&nars), 0);
    let narinfo = fs::read_to_string(cache.join(format!("{hash_part}.narinfo"))).unwrap();
    let url = narinfo
        .lines()
        .find_map(|l| l.strip_prefix("URL: "))
        .unwrap();
    let object = cache.join(url);
    let good = fs::read(&object).unwrap();
    let table = cachecore::seekable::SeekTable::parse_from_tail(&good).unwrap();
    let kept = kept_frames(&nars);
    assert_eq!(kept.len(), table.len(), "{kept:?}");
    for frame in table.frames() {
        let bytes =
            &good[frame.compressed_range().start as usize..][..frame.compressed_size as usize];
        let name = format!("frame-{}.zst", sha256_hex(bytes));
        assert!(kept.iter().any(|k| k.ends_with(&name)), "{name} not kept");
    }
    drop(mount);

    // A new mount on that directory reads every frame from there: the seek table and the
    // frame digests are fetched, no frame.
    server.reset_counts();
    let (mount, _) = mount_in("mnt-again", Some(&nars));
    assert_same_as_store(&fixture, &mount.path(base(&fixture)));
    let (requests, bytes) = nar_bytes();
    assert!(
        requests <= 2 && bytes <= (64 << 10) + 8192,
        "{requests} requests, {bytes} NAR bytes with every frame kept"
    );
    drop(mount);
    // A kept frame damaged on disk is not served: it is fetched again, and kept again intact.
    let damaged = &kept[0];
    let mut frame = fs::read(damaged).unwrap();
    frame[10] ^= 0x01;
    fs::write(damaged, &frame).unwrap();
    server.reset_counts();
    let (mount, _) = mount_in("mnt-damaged", Some(&nars));
    assert_same_as_store(&fixture, &mount.path(base(&fixture)));
    let (requests, bytes) = nar_bytes();
    let frame_len = frame.len() as u64;
    assert!(
        requests <= 3 && bytes >= frame_len && bytes <= frame_len + (64 << 10) + 8192,
        "{requests} requests, {bytes} NAR bytes to fetch again a {frame_len}-byte frame"
    );
    let again = fs::read(damaged).unwrap();
    assert!(damaged
        .to_string_lossy()
        .ends_with(&format!("frame-{}.zst", sha256_hex(&again))));
    drop(mount);

    // One byte of the large file's last frame flipped in the bucket (read by a mount with a
    // new --cache-dir): EIO, never a wrong byte.
    let last = table.frames()[table.len() - 1];
    let mut bad = good.clone();
    bad[last.compressed_offset as usize + 50] ^= 0x01;
    fs::write(&object, &bad).unwrap();
    let (mount, _) = mount_at("mnt-flipped");
    let root = mount.path(base(&fixture));
    let expected = fs::read(Path::new(&fixture).join("z-large")).unwrap();
    let out = cat(&root.join("z-large"));
    assert!(!out.status.success(), "read a changed frame");
    assert!(
        out.stdout.len() < expected.len() && expected.starts_with(&out.stdout),
        "wrong bytes served"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Input/output error"),
        "{out:?}"
    );
    assert!(mount.log().contains("signed digest"), "{}", mount.log());
    // What the intact frames hold still reads.
    assert_eq!(cat(&root.join("a-small-file")).stdout, b"a small file\n");
    drop(mount);
    // `cachecore cat --trusted-key` reads the same way: the frames holding the file, checked.
    let cat_in_cache = |file: &str| {
        cachecore_output(
            &[
                "cat",
                path_str(&cache),
                &format!("{fixture}/{file}"),
                "--trusted-key",
                &public,
            ],
            b"",
        )
    };
    let out = cat_in_cache("a-small-file");
    assert_eq!(out.stdout, b"a small file\n", "{out:?}");
    let out = cat_in_cache("z-large");
    assert!(!out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("signed digest"),
        "{out:?}"
    );
    assert!(out.stdout.len() < expected.len() && expected.starts_with(&out.stdout));
    fs::write(&object, &good).unwrap();

    // The listing changed (the script no longer executable): the path's tree is refused.
    let ls_file = cache.join(format!("{hash_part}.ls"));
    let listing = fs::read_to_string(&ls_file).unwrap();
    assert!(listing.contains("\"executable\":true"));
    fs::write(
        &ls_file,
        listing.replace("\"executable\":true", "\"executable\":false"),
    )
    .unwrap();
    let (mount, mnt) = mount_at("mnt-listing");
    let out = Command::new("ls")
        .arg(mnt.join(base(&fixture)))
        .output()
        .unwrap();
    assert!(!out.status.success(), "{out:?}");
    assert!(mount.log().contains("ListingHash"), "{}", mount.log());
    assert!(is_mounted(&mnt));
}

#[test]
fn a_path_without_a_listing_has_its_nar_fetched_once_for_its_tree_and_its_reads() {
    require_fuse();
    let work = tempdir();
    let (fixture, _, public, cache) = signed_fixture(work.path(), "once-1", &["--no-listing"]);
    let server = HttpServer::serve(&cache);
    let object = nar_object(&cache);
    let key = format!("nar/{}", object.file_name().unwrap().to_str().unwrap());
    let size = fs::metadata(&object).unwrap().len();
    for check in ["frames", "nar"] {
        server.reset_counts();
        let mnt = work.path().join(format!("mnt-{check}"));
        let mount = Mount::start(
            &mnt,
            &[
                "mount",
                &server.url(),
                path_str(&mnt),
                "--trusted-key",
                &public,
                "--check",
                check,
                "--cache-dir",
                path_str(&work.path().join(format!("nars-{check}"))),
            ],
        );
        // The tree (no listing: read from the NAR, checked), then every file's contents.
        assert_same_as_store(&fixture, &mount.path(base(&fixture)));
        let served = server.served();
        let (_, bytes) = served.get(&key).copied().unwrap_or_default();
        assert_eq!(bytes, size, "--check {check}: {served:?}");
    }
}

/// `cachecore sign` gives a path pushed without a key a `FramesSig` too — through `cachecore
/// serve` (which takes it from a key it announces) and into a directory — after checking its
/// frame digests, so a mount trusting the key reads it by frames: a small file costs one
/// frame, not the whole NAR. Frame digests that fail the check get no `FramesSig`.
#[test]
fn a_path_signed_by_sign_is_read_by_frames_and_bad_digests_are_not_vouched_for() {
    require_fuse();
    let work = tempdir();
    let fixture = fixture_path(work.path());
    let cache = work.path().join("cache");
    cachecore_ok(&["init", path_str(&cache)], b"");
    cachecore_ok(&["push", path_str(&cache), &fixture, "-q"], b"");
    let narinfo_file = cache.join(format!("{}.narinfo", &base(&fixture)[..32]));
    let narinfo = || fs::read_to_string(&narinfo_file).unwrap();
    assert!(narinfo().contains("FramesHash: ") && !narinfo().contains("FramesSig"));
    let (a_secret, a_public) = nix_generate_key(work.path(), "sign-frames-a-1");
    let (b_secret, b_public) = nix_generate_key(work.path(), "sign-frames-b-1");

    // Through serve, with a token allowed to sign and the key announced.
    let token = work.path().join("sign.token");
    fs::write(&token, "SIGN-FRAMES-TOKEN-1\n").unwrap();
    let port = cachecore_testkit::net::free_port();
    let mut server = serve_with(
        path_str(&cache),
        port,
        &["--token-file", path_str(&token), "--public-key", &a_public],
    );
    let sign = |url: &str, secret: &Path, extra: &[&str]| {
        let args = [
            &["sign", url, &fixture, "--key", path_str(secret)][..],
            extra,
        ]
        .concat();
        let out = cachecore_output(&args, b"");
        assert!(out.status.success(), "{args:?}: {out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let url = format!("http://127.0.0.1:{port}");
    let said = sign(&url, &a_secret, &["--token-file", path_str(&token)]);
    assert!(
        said.contains("1 path signed with sign-frames-a-1 (1 with their frame digests)"),
        "{said}"
    );
    let _ = server.kill();
    let _ = server.wait();
    // Into the directory, a second key: both FramesSigs stay.
    let said = sign(path_str(&cache), &b_secret, &[]);
    assert!(said.contains("(1 with their frame digests)"), "{said}");
    let text = narinfo();
    for field in ["FramesSig: sign-frames-a-1:", "FramesSig: sign-frames-b-1:"] {
        assert!(text.contains(field), "{text}");
    }
    // Again: nothing to do.
    let said = sign(path_str(&cache), &b_secret, &[]);
    assert!(
        said.contains("0 paths signed with sign-frames-b-1, 1 already signed by it"),
        "{said}"
    );
    for public in [&a_public, &b_public] {
        cachecore_ok(&["verify", path_str(&cache), "--trusted-key", public], b"");
    }

    // A mount trusting either key reads a small file by its frame, checked.
    let http = HttpServer::serve(&cache);
    let nar_bytes = || -> (u64, u64) {
        http.served()
            .iter()
            .filter(|(k, _)| k.starts_with("nar/"))
            .fold((0, 0), |(r, b), (_, (n, bytes))| (r + n, b + bytes))
    };
    let nars = work.path().join("nars");
    let mnt = work.path().join("mnt");
    let mount = Mount::start(
        &mnt,
        &[
            "mount",
            &http.url(),
            path_str(&mnt),
            "--trusted-key",
            &b_public,
            "--cache-dir",
            path_str(&nars),
        ],
    );
    let root = mount.path(base(&fixture));
    assert_eq!(cat(&root.join("a-small-file")).stdout, b"a small file\n");
    let (requests, bytes) = nar_bytes();
    assert!(
        requests <= 3 && bytes <= (4 << 20) + (64 << 10) + 8192,
        "{requests} requests, {bytes} bytes for a 13-byte file"
    );
    assert_eq!(kept_nars(&nars), 0, "a whole NAR was fetched");
    drop(mount);

    // Frame digests that do not hash to FramesHash: the narinfo is signed, its digests not.
    let frames = fs::read_dir(cache.join("nar"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().ends_with(".frames"))
        .unwrap();
    let mut lying = fs::read(&frames).unwrap();
    let last = lying.len() - 1;
    lying[last] ^= 1;
    fs::write(&frames, lying).unwrap();
    let (c_secret, _) = nix_generate_key(work.path(), "sign-frames-c-1");
    let said = sign(path_str(&cache), &c_secret, &[]);
    assert!(
        said.contains(&format!("warning: {fixture}: no FramesSig added: "))
            && said.contains("but the narinfo's FramesHash is"),
        "{said}"
    );
    let text = narinfo();
    assert!(
        text.contains("\nSig: sign-frames-c-1:") && !text.contains("FramesSig: sign-frames-c-1:"),
        "{text}"
    );
}

/// Every entry under `dir`, depth first: (path relative to `dir` as bytes, kind, mode, size
/// or link target as bytes) — names kept as the bytes they are.
fn exact_tree(dir: &Path) -> Vec<(Vec<u8>, char, u32, Vec<u8>)> {
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::fs::PermissionsExt as _;
    let mut out = Vec::new();
    let mut stack = vec![PathBuf::new()];
    while let Some(rel) = stack.pop() {
        for entry in fs::read_dir(dir.join(&rel)).unwrap() {
            let entry = entry.unwrap();
            let rel = rel.join(entry.file_name());
            let meta = fs::symlink_metadata(dir.join(&rel)).unwrap();
            let (kind, what) = if meta.file_type().is_symlink() {
                let target = fs::read_link(dir.join(&rel)).unwrap();
                ('l', target.as_os_str().as_bytes().to_vec())
            } else if meta.is_dir() {
                stack.push(rel.clone());
                ('d', Vec::new())
            } else {
                ('f', fs::read(dir.join(&rel)).unwrap())
            };
            let mode = if kind == 'f' {
                meta.permissions().mode() & 0o111
            } else {
                0
            };
            out.push((rel.as_os_str().as_bytes().to_vec(), kind, mode, what));
        }
    }
    out.sort();
    out
}

/// Names that are not UTF-8 (Nix allows any bytes but `/` and NUL) show their true bytes in
/// the mount, whatever the cache holds for a listing: none (what `cachecore push` now writes
/// for such a path), Nix's own (raw bytes in the JSON, which no JSON parser takes), or one
/// that lost them to U+FFFD (what `cachecore push` wrote before): the tree comes from the
/// NAR, checked against its NarHash.
#[test]
fn names_that_are_not_utf8_show_their_true_bytes() {
    use std::os::unix::ffi::OsStrExt as _;
    require_fuse();
    let work = tempdir();
    let dir = work.path().join("latin1");
    let name = |b: &[u8]| std::ffi::OsStr::from_bytes(b).to_owned();
    fs::create_dir_all(dir.join(name(b"r\xe9pertoire"))).unwrap();
    write_mode(&dir.join(name(b"caf\xe9")), b"espresso\n", 0o644);
    write_mode(&dir.join(name(b"caf\xe8")), b"another\n", 0o644);
    write_mode(
        &dir.join(name(b"r\xe9pertoire")).join("run"),
        b"#!/bin/sh\necho ran\n",
        0o755,
    );
    std::os::unix::fs::symlink(name(b"caf\xe9"), dir.join("link")).unwrap();
    make_world_readable(&dir);
    let path = nix_store_add(&dir);
    let expected = exact_tree(Path::new(&path));
    assert_eq!(expected.len(), 5, "{expected:?}");

    // Pushed by cachecore: no listing (it could not say these names).
    let pushed = work.path().join("pushed");
    cachecore_ok(&["init", path_str(&pushed)], b"");
    cachecore_ok(&["push", path_str(&pushed), &path, "-q"], b"");
    let ls = pushed.join(format!("{}.ls", &base(&path)[..32]));
    assert!(
        !ls.exists(),
        "a listing was written for names it cannot hold"
    );
    // Written by Nix, with its listing (raw bytes in JSON).
    let by_nix = work.path().join("by-nix");
    nix_copy_to_file(&by_nix, "write-nar-listing=true", &[&path]);
    let nix_ls = fs::read(by_nix.join(format!("{}.ls", &base(&path)[..32]))).unwrap();
    assert!(
        nix_ls.windows(4).any(|w| w == b"caf\xe9"),
        "Nix's listing: {}",
        String::from_utf8_lossy(&nix_ls)
    );
    // A lossy listing beside the NAR, as cachecore's push wrote it before (U+FFFD: both
    // files fell onto one name).
    let lossy = work.path().join("lossy");
    cachecore_ok(&["init", path_str(&lossy)], b"");
    cachecore_ok(&["push", path_str(&lossy), &path, "-q"], b"");
    let mut nar = Vec::new();
    cachecore::nar::dump(Path::new(&path), &mut nar).unwrap();
    let listing = cachecore::nar::Listing::from_nar(&nar[..]).unwrap();
    assert!(listing.may_have_lost_bytes());
    fs::write(
        lossy.join(format!("{}.ls", &base(&path)[..32])),
        serde_json::to_vec(&listing).unwrap(),
    )
    .unwrap();

    for (n, cache) in [&pushed, &by_nix, &lossy].into_iter().enumerate() {
        let mnt = work.path().join(format!("mnt{n}"));
        let mount = Mount::start(
            &mnt,
            &[
                "mount",
                path_str(cache),
                path_str(&mnt),
                "--no-check-sigs",
                "--cache-dir",
                path_str(&work.path().join(format!("nars{n}"))),
            ],
        );
        let root = mount.path(base(&path));
        assert_eq!(exact_tree(&root), expected, "{}", cache.display());
        let run = Command::new(root.join(name(b"r\xe9pertoire")).join("run"))
            .output()
            .unwrap();
        assert_eq!(run.stdout, b"ran\n", "{run:?}");
        assert!(!root.join("caf\u{FFFD}").exists());
    }
}

/// The NAR requests and bytes `server` answered so far.
/// The NARs kept in a `--cache-dir`.
fn kept_nars(dir: &Path) -> usize {
    fs::read_dir(dir).map_or(0, |d| {
        d.filter(|e| {
            e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .ends_with(".nar")
        })
        .count()
    })
}

/// The frames kept in a `--cache-dir` (`frame-<sha256 in hex>.zst`).
fn kept_frames(dir: &Path) -> Vec<PathBuf> {
    fs::read_dir(dir).map_or(Vec::new(), |d| {
        d.map(|e| e.unwrap().path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy();
                name.starts_with("frame-") && name.ends_with(".zst")
            })
            .collect()
    })
}

fn sha256_hex(bytes: &[u8]) -> String {
    cachecore::hash::Hash::digest(cachecore::hash::HashAlgo::Sha256, bytes).to_hex()
}

fn nar_served(server: &HttpServer) -> (u64, u64) {
    server
        .served()
        .iter()
        .filter(|(k, _)| k.starts_with("nar/"))
        .fold((0, 0), |(r, b), (_, (n, bytes))| (r + n, b + bytes))
}

/// `--check frames` reads a small file of a signed multi-frame NAR by its frames; `--check nar`
/// fetches the whole NAR first, checks it against the NarHash and keeps it in --cache-dir.
#[test]
fn check_nar_fetches_the_whole_nar_where_check_frames_fetches_one_frame() {
    require_fuse();
    let work = tempdir();
    let (fixture, _, public, cache) = signed_fixture(work.path(), "check-how-1", &[]);
    let object_size = fs::metadata(nar_object(&cache)).unwrap().len();
    assert!(object_size > 24 << 20);
    let server = HttpServer::serve(&cache);
    for (how, nars) in [("frames", "nars-frames"), ("nar", "nars-nar")] {
        let mnt = work.path().join(format!("mnt-{how}"));
        let nars = work.path().join(nars);
        let mount = Mount::start(
            &mnt,
            &[
                "mount",
                &server.url(),
                path_str(&mnt),
                "--trusted-key",
                &public,
                "--check",
                how,
                "--cache-dir",
                path_str(&nars),
            ],
        );
        server.reset_counts();
        let out = cat(&mount.path(base(&fixture)).join("a-small-file"));
        assert_eq!(out.stdout, b"a small file\n", "--check {how}: {out:?}");
        let (requests, bytes) = nar_served(&server);
        let kept = kept_nars(&nars);
        if how == "frames" {
            let frames = kept_frames(&nars).len();
            assert!(
                requests <= 3 && bytes <= (4 << 20) + (64 << 10) + 8192 && kept == 0 && frames == 1,
                "--check frames: {requests} requests, {bytes} bytes of a {object_size}-byte \
                 NAR, {kept} NARs and {frames} frames kept, for a 13-byte file"
            );
        } else {
            assert!(
                bytes >= object_size && kept == 1,
                "--check nar: {bytes} bytes of a {object_size}-byte NAR, {kept} NARs kept"
            );
        }
    }
}

/// `--memory` bounds the decompressed frames kept: a small file read, then a 16 MiB one, then
/// another small file in the first one's frame — with room for the frames that frame is still
/// in memory (no request), with `--memory 16777216` (room for one frame) it is fetched again.
#[test]
fn mount_memory_bounds_the_frames_kept_in_memory() {
    require_fuse();
    let work = tempdir();
    let path = store_path_of(
        &work.path().join("memory-tree"),
        &[
            ("a1", b"first small file\n"),
            ("a2", b"second small file\n"),
            (
                "z",
                &cachecore_testkit::data::pseudo_random_bytes(16 << 20, 7),
            ),
        ],
    );
    let cache = work.path().join("cache");
    cachecore_ok(&["init", path_str(&cache)], b"");
    cachecore_ok(&["push", path_str(&cache), &path, "-q"], b"");
    let server = HttpServer::serve(&cache);
    for (memory, refetched) in [("268435456", false), ("16777216", true)] {
        let mnt = work.path().join(format!("mnt-{memory}"));
        let mount = Mount::start(
            &mnt,
            &[
                "mount",
                &server.url(),
                path_str(&mnt),
                "--no-check-sigs",
                "--memory",
                memory,
                "--cache-dir",
                path_str(&work.path().join("nars")),
            ],
        );
        let root = mount.path(base(&path));
        assert_eq!(cat(&root.join("a1")).stdout, b"first small file\n");
        let z = fs::read(root.join("z")).unwrap();
        assert!(z == cachecore_testkit::data::pseudo_random_bytes(16 << 20, 7));
        let before = nar_served(&server).0;
        assert_eq!(cat(&root.join("a2")).stdout, b"second small file\n");
        let after = nar_served(&server).0;
        assert_eq!(
            after > before,
            refetched,
            "--memory {memory}: {} NAR requests to read a2 after z",
            after - before
        );
    }
}
