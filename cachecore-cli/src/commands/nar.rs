//! `cachecore nar pack|unpack|ls|cat|hash`.

use std::io::{self, BufWriter, Write as _};

use anyhow::Context as _;
use cachecore::nar;
use cachecore::untrusted::Untrusted;

use super::open_input;
use crate::cli::NarCommand;
use crate::stdout::{outln, stdout, stream};

pub fn run(cmd: NarCommand) -> anyhow::Result<()> {
    match cmd {
        NarCommand::Pack { path } => {
            // The writer buffers 1 MiB itself; large files go into a pipe by splice(2).
            nar::dump_to(&path, stream())?;
        }
        NarCommand::Unpack { dest } => {
            nar::unpack(io::stdin().lock(), &dest).with_context(|| {
                format!("cannot unpack the NAR from stdin to {}", dest.display())
            })?;
        }
        NarCommand::Ls { nar: file, json } => {
            let listing = nar::Listing::from_nar(open_input(&file)?)
                .with_context(|| format!("cannot list {}", file.display()))?;
            let mut out = BufWriter::new(stdout());
            if json {
                serde_json::to_writer(&mut out, &listing)?;
                writeln!(out)?;
            } else {
                print_tree(&mut out, "", &listing.root)?;
            }
            out.flush()?;
        }
        NarCommand::Cat { nar: file, subpath } => {
            let mut out = stream().buffered();
            nar::cat_verified(open_input(&file)?, &subpath, &mut out)
                .with_context(|| format!("cannot print {subpath:?} from {}", file.display()))?;
            out.flush()?;
        }
        NarCommand::Hash { path, bare, size } => {
            let (hash, nar_size) = nar::hash_path(&path)?;
            let text = if bare {
                hash.to_nix32()
            } else {
                hash.to_string()
            };
            if size {
                outln!("{text} {nar_size}")?;
            } else {
                outln!("{text}")?;
            }
        }
    }
    Ok(())
}

/// One line per entry, parents before children, in NAR order.
pub(crate) fn print_tree(
    out: &mut impl io::Write,
    path: &str,
    node: &nar::ListingNode,
) -> io::Result<()> {
    writeln!(out, "{}", describe(path, node))?;
    if let nar::ListingNode::Directory { entries } = node {
        for (name, child) in entries {
            let child_path = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}/{name}")
            };
            print_tree(out, &child_path, child)?;
        }
    }
    Ok(())
}

/// `ls -l`-like; names and symlink targets (a cache's or a NAR file's text) escaped.
fn describe(path: &str, node: &nar::ListingNode) -> String {
    let shown = Untrusted(if path.is_empty() { "." } else { path });
    match node {
        nar::ListingNode::Directory { .. } => format!("dr-xr-xr-x {:>12} {shown}/", 0),
        nar::ListingNode::Regular {
            size, executable, ..
        } => {
            let mode = if *executable {
                "-r-xr-xr-x"
            } else {
                "-r--r--r--"
            };
            format!("{mode} {size:>12} {shown}")
        }
        nar::ListingNode::Symlink { target } => {
            format!("lrwxrwxrwx {:>12} {shown} -> {}", 0, Untrusted(target))
        }
    }
}
