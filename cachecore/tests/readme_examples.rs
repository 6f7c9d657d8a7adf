//! Every `rust` block of the README appears, line for line, in `examples/readme.rs`, which
//! `cargo test` compiles: the README's library examples cannot rot.

#![allow(clippy::unwrap_used)]

#[test]
fn every_rust_block_of_the_readme_is_in_the_compiled_example() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md")).unwrap();
    let example =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/readme.rs"))
            .unwrap();
    let example: Vec<&str> = example.lines().map(str::trim).collect();
    let mut blocks = 0;
    let mut lines = readme.lines();
    while lines.by_ref().any(|l| l == "```rust") {
        let block: Vec<&str> = lines
            .by_ref()
            .take_while(|l| *l != "```")
            .map(str::trim)
            .collect();
        assert!(
            example.windows(block.len()).any(|w| w == block.as_slice()),
            "this README block is not in examples/readme.rs (line for line):\n{}",
            block.join("\n")
        );
        blocks += 1;
    }
    assert_eq!(blocks, 2, "the README's rust blocks and examples/readme.rs");
}
