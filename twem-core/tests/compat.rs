//! Golden data from nutcracker 0.5.0 (see `tests/data/README.md`): every row
//! of every file must match, or a key would move when nutcracker is swapped
//! for twem.

use twem_core::hash::HashKind;

const HASHES: &str = include_str!("data/hashes.tsv");

/// Decodes the hex column; the golden files only hold well-formed hex, so a
/// bad row is a broken fixture and fails the test loudly.
fn unhex(hex: &str) -> Vec<u8> {
    assert!(hex.len() % 2 == 0, "odd hex length: {hex:?}");
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digit in golden data"))
        .collect()
}

/// The data rows of a golden TSV file, split into columns.
fn rows(text: &str) -> impl Iterator<Item = Vec<&str>> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| line.split('\t').collect())
}

// Each of nutcracker's 12 hashes over all 1,000 keys gives nutcracker's value.
#[test]
fn every_hash_row_matches() {
    let mut checked = 0;
    let mut failures = Vec::new();
    for row in rows(HASHES) {
        let [name, key_hex, value] = row[..] else {
            panic!("malformed row {row:?}");
        };
        let kind = HashKind::from_name(name).unwrap_or_else(|| panic!("unknown hash {name}"));
        assert!(kind.nutcracker_compatible());
        let expected: u32 = value.parse().expect("decimal u32");
        let got = kind.hash(&unhex(key_hex));
        if got != expected {
            failures.push(format!("{name} {key_hex}: got {got}, want {expected}"));
        }
        checked += 1;
    }
    assert_eq!(checked, 12 * 1000, "golden file is incomplete");
    assert!(
        failures.is_empty(),
        "{} mismatches, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}
