//! Invariants: reading never panics; a NAR the reader accepts, re-written with the writer from its
//! events, equals the input byte for byte (canonical form); and its listing can be built.
#![no_main]

use cachecore::nar::{self, Event, Reader};
use libfuzzer_sys::fuzz_target;

/// Re-writes the NAR read from `reader` into `out`, one node at a time.
fn copy_node<W: std::io::Write>(
    reader: &mut Reader<&[u8]>,
    first: Event<'_>,
    node: nar::writer::Node<'_, W>,
) -> Result<(), String> {
    match first {
        Event::File { executable, size, .. } => {
            node.file(executable, size, &mut reader.contents()).map_err(|e| e.to_string())?;
        }
        Event::Symlink { target } => {
            let target = target.to_vec();
            node.symlink(&target).map_err(|e| e.to_string())?;
        }
        Event::DirectoryStart => {
            let mut dir = node.directory().map_err(|e| e.to_string())?;
            loop {
                match reader.next().map_err(|e| e.to_string())? {
                    Some(Event::Entry { name }) => {
                        let name = name.to_vec();
                        let child = dir.entry(&name).map_err(|e| e.to_string())?;
                        let ev = reader.next().map_err(|e| e.to_string())?.ok_or("eof")?;
                        // Events borrow the reader; copy what the child needs first.
                        let ev = owned(ev);
                        copy_node(reader, ev.as_event(), child)?;
                        match reader.next().map_err(|e| e.to_string())? {
                            Some(Event::EntryEnd) => {}
                            other => return Err(format!("expected EntryEnd, got {other:?}")),
                        }
                    }
                    Some(Event::DirectoryEnd) => break,
                    other => return Err(format!("unexpected {other:?}")),
                }
            }
            dir.close().map_err(|e| e.to_string())?;
        }
        other => return Err(format!("unexpected {other:?}")),
    }
    Ok(())
}

enum Owned {
    File { executable: bool, size: u64, nar_offset: u64 },
    Symlink(Vec<u8>),
    Dir,
    Other,
}

fn owned(ev: Event<'_>) -> Owned {
    match ev {
        Event::File { executable, size, nar_offset } => Owned::File { executable, size, nar_offset },
        Event::Symlink { target } => Owned::Symlink(target.to_vec()),
        Event::DirectoryStart => Owned::Dir,
        _ => Owned::Other,
    }
}

impl Owned {
    fn as_event(&self) -> Event<'_> {
        match self {
            Owned::File { executable, size, nar_offset } => {
                Event::File { executable: *executable, size: *size, nar_offset: *nar_offset }
            }
            Owned::Symlink(t) => Event::Symlink { target: t },
            Owned::Dir => Event::DirectoryStart,
            Owned::Other => Event::EntryEnd,
        }
    }
}

fuzz_target!(|data: &[u8]| {
    // Validate fully first: only a NAR the reader accepts end to end must round-trip.
    let mut check = Reader::new(data);
    let valid = loop {
        match check.next() {
            Ok(Some(_)) => {}
            Ok(None) => break true,
            Err(_) => break false,
        }
    };
    let listing = nar::Listing::from_nar(data);
    assert_eq!(valid, listing.is_ok(), "reader and listing disagree");
    if !valid {
        return;
    }
    let mut reader = Reader::new(data);
    let mut out = Vec::new();
    let root = nar::writer::open(&mut out).expect("writing to a Vec");
    let first = owned(reader.next().expect("valid").expect("a root node"));
    copy_node(&mut reader, first.as_event(), root).expect("a valid NAR re-writes");
    assert!(reader.next().expect("valid").is_none());
    assert_eq!(out, data, "a valid NAR re-written must equal its input");
});
