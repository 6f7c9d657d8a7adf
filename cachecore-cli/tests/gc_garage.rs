//! GC and pushes on a real S3 server (Garage), with real processes killed with `kill -9`.
//!
//! The `cachecore` processes reach Garage through a [`Gate`] that holds one chosen request —
//! before Garage sees it, or after Garage carried it out but before the answer comes back — so
//! each process is killed at a point named by what it sends (its first narinfo
//! write, its tombstone, its first NAR delete…), never after a sleep. After every kill:
//! `cachecore verify` finds every visible narinfo with its NAR and whole closure, real Nix
//! substitutes every visible path over HTTP with signatures required, and the same command run
//! again finishes.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::garage::Garage;
use common::gate::{Gate, Stop};
use common::*;

struct Bucket {
    garage: Garage,
    gate: Gate,
    /// `s3://…` through the gate.
    s3: String,
    /// The bucket over Garage's website endpoint, for Nix.
    web: String,
    public: String,
    secret: String,
    tmp: tempfile::TempDir,
    checks: usize,
}

impl Bucket {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = cachecore_command();
        cmd.args(args)
            .env_remove("AWS_PROFILE")
            .env_remove("AWS_SESSION_TOKEN")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .envs(self.garage.env());
        cmd
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = run_with_stdin(&mut self.command(args), b"");
        assert_cachecore_ok(&out, args);
        String::from_utf8(out.stdout).unwrap()
    }

    fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args)).unwrap()
    }

    /// Holds at `stop` the request `matches(method, target, body)` picks after `skip` others,
    /// and no other.
    fn hold_one(
        &self,
        matches: impl Fn(&str, &str, &str) -> bool + Send + 'static,
        skip: usize,
        stop: Stop,
    ) {
        let mut picked = 0;
        self.gate.hold(stop, move |r| {
            matches(r.method, r.target, r.body) && {
                picked += 1;
                picked == skip + 1
            }
        });
    }

    /// Runs `cachecore ARGS` until the gate holds the request `matches` picks (after `skip`
    /// others), then kills it with SIGKILL and throws the held request away. Returns the
    /// request held (its line, and the body it was picked by).
    fn kill_at(
        &self,
        args: &[&str],
        matches: impl Fn(&str, &str, &str) -> bool + Send + 'static,
        skip: usize,
        stop: Stop,
    ) -> String {
        self.hold_one(matches, skip, stop);
        let mut child = self
            .command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let held = self.gate.wait_held_while(1, Duration::from_secs(120), || {
            child.try_wait().unwrap().is_none()
        });
        let Some(mut held) = held else {
            let out = child.wait_with_output().unwrap();
            let seen = self.gate.requests();
            panic!(
                "`cachecore {}` ended ({}) before the request to hold:\n{}\nlast requests:\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr),
                seen[seen.len().saturating_sub(30)..].join("\n")
            );
        };
        let held = held.remove(0);
        eprintln!("killing `cachecore {}` at: {held}", args[0]);
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        assert_eq!(
            std::os::unix::process::ExitStatusExt::signal(&status),
            Some(9),
            "{held}"
        );
        self.gate.discard();
        held
    }

    /// The store paths whose narinfos are visible.
    fn visible(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .ok(&["ls", &self.s3])
            .lines()
            .map(str::to_owned)
            .collect();
        v.sort();
        v
    }

    /// Every visible narinfo has its NAR and whole closure (`cachecore verify`, signatures
    /// checked), and Nix substitutes every visible path into a fresh store, signatures required.
    fn check_whole(&mut self, what: &str) -> Vec<String> {
        self.ok(&["verify", &self.s3, "--trusted-key", &self.public]);
        let visible = self.visible();
        if visible.is_empty() {
            return visible;
        }
        self.checks += 1;
        let fresh = self.tmp.path().join(format!("check-{}/store", self.checks));
        let mut cmd = nix_command("nix");
        cmd.env(
            "XDG_CACHE_HOME",
            fresh.parent().unwrap().join("nix-client-cache"),
        )
        .args(["copy", "--from", &self.web, "--to"])
        .arg(&fresh)
        .args(&visible)
        .args(["--option", "require-sigs", "true"])
        .args(["--option", "trusted-public-keys", &self.public])
        .args(["--option", "substituters", ""]);
        let out = nix_output(&mut cmd, b"");
        assert!(
            out.status.success(),
            "{what}: Nix cannot substitute the visible paths {visible:?}:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        visible
    }

    /// Deletes the leases killed runs left (as their expiry would).
    fn expire_leases(&self) {
        for line in self.gate.requests() {
            if let Some(rest) = line.strip_prefix("PUT /nixcache/gcleases/") {
                let name = rest.split([' ', '?']).next().unwrap();
                self.garage.delete_object(&format!("gcleases/{name}"));
            }
        }
    }

    /// What a GC with no grace, taking every unnamed object, would delete now.
    fn left_to_collect(&self) -> (usize, usize) {
        let r = self.json(&[
            "gc",
            &self.s3,
            "--force",
            "--failed-uploads-older-than",
            "0s",
            "--dry-run",
            "--json",
        ]);
        let n = |k: &str| r[k].as_array().unwrap().len();
        (n("narinfos_deleted"), n("objects_deleted"))
    }
}

fn as_strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

fn is_narinfo_put(method: &str, path: &str, _: &str) -> bool {
    method == "PUT" && path.split('?').next().unwrap().ends_with(".narinfo")
}

/// Whether a request deletes a key `key` accepts: a `DELETE`, or a `POST ?delete` (S3's
/// DeleteObjects, which object_store sends) naming it.
fn deletes(method: &str, path: &str, body: &str, key: impl Fn(&str) -> bool) -> bool {
    match method {
        "DELETE" => path
            .strip_prefix("/nixcache/")
            .is_some_and(|k| key(k.split('?').next().unwrap())),
        "POST" if path.ends_with("?delete") => body
            .split("<Key>")
            .skip(1)
            .any(|k| key(k.split("</Key>").next().unwrap())),
        _ => false,
    }
}

fn base(path: &str) -> &str {
    Path::new(path).file_name().unwrap().to_str().unwrap()
}

#[test]
fn pushes_and_gc_killed_midway_on_garage_leave_every_visible_closure_whole() {
    let tmp = tempdir();
    let refs = |deps: &str| format!("/bin/mkdir $out; echo {deps} > $out/refs");
    let built = nix_build_scripts(
        tmp.path(),
        &[
            (
                "ggshared",
                "/bin/mkdir $out; echo shared > $out/f".to_owned(),
            ),
            ("ggone", "/bin/mkdir $out; echo one > $out/f".to_owned()),
            ("ggtwo", "/bin/mkdir $out; echo two > $out/f".to_owned()),
            ("ggapp1", refs("${ggshared} ${ggone}")),
            ("ggapp2", refs("${ggshared} ${ggtwo}")),
        ],
    );
    let [shared, one, two, app1, app2]: [String; 5] = built.try_into().unwrap();
    let (secret, public) = nix_generate_key(tmp.path(), "gc-garage-1");
    let garage = Garage::start();
    let web = garage.serve_website();
    let gate = Gate::start(garage.endpoint.trim_start_matches("http://"));
    let s3 = format!(
        "s3://{}?endpoint={}&region=garage",
        garage.bucket,
        gate.url()
    );
    let mut b = Bucket {
        garage,
        gate,
        s3,
        web,
        public,
        secret: path_str(&secret).to_owned(),
        tmp,
        checks: 0,
    };
    let s3 = b.s3.clone();
    let key = b.secret.clone();
    let push = |p: &str| -> Vec<String> {
        ["push", &s3, p, "--key", &key, "--quiet"]
            .map(str::to_owned)
            .to_vec()
    };
    let args = |v: &[String]| -> Vec<String> { v.to_vec() };

    // 1. A push of app1 killed just before its first narinfo write: its NARs are there, no
    //    narinfo; the cache is whole (empty), and the push run again finishes.
    let push1 = args(&push(&app1));
    let held = b.kill_at(&as_strs(&push1), is_narinfo_put, 0, Stop::Request);
    assert!(held.contains(".narinfo"), "{held}");
    assert_eq!(
        b.check_whole("push killed before its first narinfo"),
        Vec::<String>::new()
    );
    b.ok(&as_strs(&push1));
    let mut closure1 = vec![shared.clone(), one.clone(), app1.clone()];
    closure1.sort();
    assert_eq!(b.check_whole("push of app1 run again"), closure1);

    // 2. A push of app2 killed after its first narinfo write went through (two's; shared is
    //    already there): two is visible, app2 not, and every visible closure is whole.
    let push2 = args(&push(&app2));
    b.kill_at(&as_strs(&push2), is_narinfo_put, 0, Stop::Response);
    let visible = b.check_whole("push killed after its first narinfo");
    assert!(
        visible.contains(&two) && !visible.contains(&app2),
        "{visible:?}"
    );
    //    Its lease (left behind, unexpired) keeps two from a GC that roots only app1.
    b.ok(&["roots", "add", &s3, "app1", &app1, "--host", "ci"]);
    let report = b.json(&["gc", &s3, "--force", "--json"]);
    assert!(
        report["narinfos_deleted"].as_array().unwrap().is_empty(),
        "a GC deleted what a killed push's lease holds: {report}"
    );
    b.check_whole("GC beside a killed push's lease");
    b.ok(&as_strs(&push2));
    let mut both = vec![
        shared.clone(),
        one.clone(),
        two.clone(),
        app1.clone(),
        app2.clone(),
    ];
    both.sort();
    assert_eq!(b.check_whole("push of app2 run again"), both);

    // 3. A push killed before its index object: every narinfo is published, none indexed; a GC
    //    still finds them (from the narinfos) and keeps the closure its lease names.
    let extra = tmp_tree(&b, "gg-extra");
    let push3: Vec<String> = [
        "push", &s3, "--add", &extra, "--name", "gg-extra", "--key", &key, "--quiet",
    ]
    .map(str::to_owned)
    .to_vec();
    b.kill_at(
        &as_strs(&push3),
        |m, p, _| m == "PUT" && p.starts_with("/nixcache/index/"),
        0,
        Stop::Request,
    );
    let visible = b.check_whole("push --add killed before its index object");
    let extra_path = visible
        .iter()
        .find(|p| p.ends_with("-gg-extra"))
        .expect("the narinfo is written before the index")
        .clone();
    b.ok(&as_strs(&push3));
    b.expire_leases();
    // Not a synchronisation: the GC keeps, with their closures, the narinfos listed in its
    // tombstone's second or later (on S3 a rewrite of the same bytes within one second keeps
    // its ETag, size and second, so it cannot be told from what was listed). The narinfos
    // written above must be a second older than the tombstone for the GC below to delete them;
    // without this wait, a fast run keeps `gg-extra` (seen in the gate of 7 December).
    std::thread::sleep(Duration::from_millis(1100));

    // 4. GC (grace 0) of everything but app1's closure, killed after its tombstone was
    //    written; then killed after its first narinfo delete; then before its first NAR delete.
    //    After each kill the cache is whole; the last run finishes the job.
    let gc = ["gc", &s3, "--force", "--failed-uploads-older-than", "1h"];
    b.kill_at(
        &gc,
        |m, p, _| m == "PUT" && p.starts_with("/nixcache/.cachecore/gc/"),
        0,
        Stop::Response,
    );
    assert_eq!(b.check_whole("GC killed after its tombstone"), {
        let mut all = both.clone();
        all.push(extra_path.clone());
        all.sort();
        all
    });
    let held = b.kill_at(
        &gc,
        |m, p, body| deletes(m, p, body, |k| k.ends_with(".narinfo")),
        0,
        Stop::Response,
    );
    let visible = b.check_whole("GC killed after its first narinfo delete");
    // Referrers go first: two (app2 refers to it) is not the first.
    assert!(!held.contains(&base(&two)[..32]), "{held}");
    assert!(visible.contains(&two), "{visible:?}");
    assert_eq!(
        visible.len(),
        5,
        "one of the six narinfos is gone: {visible:?}"
    );
    b.kill_at(
        &gc,
        |m, p, body| deletes(m, p, body, |k| k.starts_with("nar/")),
        0,
        Stop::Request,
    );
    assert_eq!(
        b.check_whole("GC killed before its first NAR delete"),
        closure1
    );
    let report = b.json(&[
        "gc",
        &s3,
        "--force",
        "--json",
        "--failed-uploads-older-than",
        "1h",
    ]);
    assert!(
        report["failures"].as_array().unwrap().is_empty(),
        "{report}"
    );
    assert!(
        !report["objects_deleted"].as_array().unwrap().is_empty(),
        "the run after the kills deletes the NARs left: {report}"
    );
    assert_eq!(b.check_whole("GC run again"), closure1);
    assert_eq!(
        b.left_to_collect(),
        (0, 0),
        "only app1's rooted closure is left"
    );

    // 5. A GC (with a grace) held just before it checks its first narinfo to delete, while a push of app2
    //    runs to the end: the push sees app2 condemned by the tombstone and uploads it again,
    //    so the GC, let go, keeps it; app2's closure stays whole.
    //    No wait between the push and the GC: a narinfo written again with the same bytes
    //    within the second it was first written in keeps its version on S3 (ETag, size,
    //    second), and the GC keeps narinfos listed in its tombstone's second for that reason.
    b.ok(&as_strs(&push2));
    b.hold_one(
        |m, p, _| m == "HEAD" && p.ends_with(".narinfo"),
        0,
        Stop::Request,
    );
    let mut gc_child = b
        .command(&["gc", &s3, "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    b.gate
        .wait_held_while(1, Duration::from_secs(120), || {
            gc_child.try_wait().unwrap().is_none()
        })
        .expect("the GC reaches its first narinfo delete");
    let again = run_with_stdin(&mut b.command(&as_strs(&push2)), b"");
    assert_cachecore_ok(&again, &["push app2 beside a GC"]);
    // The held request is dropped: the GC's client asks again (and finds app2 rewritten), or
    // the run stops there; either way app2 stays.
    b.gate.discard();
    let out = gc_child.wait_with_output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    assert!(
        !report["narinfos_deleted"]
            .as_array()
            .unwrap()
            .iter()
            .any(|k| k.as_str().unwrap().starts_with(&base(&app2)[..32])),
        "the GC deleted app2 although a push rewrote it: {report}"
    );
    let visible = b.check_whole("GC beside a push of what it condemned");
    assert!(
        visible.contains(&app2) && visible.contains(&two),
        "{visible:?}"
    );
}

/// A small directory to `push --add`.
fn tmp_tree(b: &Bucket, name: &str) -> String {
    let dir = b.tmp.path().join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("f"), format!("{name}\n")).unwrap();
    path_str(&dir).to_owned()
}
