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

mod by_hand {
    //! Placement checked with pools read straight from pools.yml by this
    //! test, so the Ring is verified independently of the config parser.
    use super::*;
    use std::collections::HashMap;
    use twem_core::hash::HashTag;
    use twem_core::ring::{server_identity, Distribution, Ring, RingServer};
    use yaml_rust2::YamlLoader;

    const POOLS: &str = include_str!("data/pools.yml");
    const PLACEMENT: &str = include_str!("data/placement.tsv");
    const PLACEMENT_EJECTED: &str = include_str!("data/placement_ejected.tsv");

    fn parse_server(entry: &str) -> RingServer {
        let (spec, name) = match entry.split_once(' ') {
            Some((spec, name)) => (spec, Some(name)),
            None => (entry, None),
        };
        let (addr, weight) = spec.rsplit_once(':').expect("weight");
        let weight = weight.parse().expect("numeric weight");
        let identity = if addr.starts_with('/') {
            server_identity(addr, None, name)
        } else {
            let (host, port) = addr.rsplit_once(':').expect("port");
            server_identity(host, Some(port.parse().expect("port")), name)
        };
        RingServer::new(identity, weight)
    }

    fn rings() -> HashMap<String, Ring> {
        let docs = YamlLoader::load_from_str(POOLS).expect("yaml");
        let root = docs[0].as_hash().expect("mapping");
        root.iter()
            .map(|(name, pool)| {
                let get = |k: &str| pool[k].as_str();
                let servers = pool["servers"]
                    .as_vec()
                    .expect("servers")
                    .iter()
                    .map(|s| parse_server(s.as_str().expect("server string")))
                    .collect();
                let hash = HashKind::from_name(get("hash").unwrap_or("fnv1a_64")).expect("hash");
                let dist = Distribution::from_name(get("distribution").unwrap_or("ketama"))
                    .expect("distribution");
                let tag = get("hash_tag").map(|t| HashTag::from_bytes(t.as_bytes()).expect("tag"));
                let ring = Ring::new(servers, hash, dist, tag).expect("valid pool");
                (name.as_str().expect("pool name").to_owned(), ring)
            })
            .collect()
    }

    // Every placement row, with the Ring built from a hand-parsed pools.yml.
    #[test]
    fn every_placement_row_matches() {
        let rings = rings();
        assert_eq!(rings.len(), 30);
        let mut checked = 0;
        let mut failures = Vec::new();
        for row in rows(PLACEMENT) {
            let [pool, key_hex, want] = row[..] else {
                panic!("malformed row {row:?}");
            };
            let ring = &rings[pool];
            let got = ring.locate_name(&unhex(key_hex));
            if got != Some(want) {
                failures.push(format!("{pool} {key_hex}: got {got:?}, want {want}"));
            }
            checked += 1;
        }
        assert_eq!(checked, 30 * 1000);
        assert!(
            failures.is_empty(),
            "{} mismatches: {:?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        );
    }

    // Every row after ejection, with the Ring built from a hand-parsed pools.yml.
    #[test]
    fn every_ejected_placement_row_matches() {
        let rings = rings();
        let mut snapshots = HashMap::new();
        let mut checked = 0;
        let mut failures = Vec::new();
        for row in rows(PLACEMENT_EJECTED) {
            let [pool, ejected, key_hex, want] = row[..] else {
                panic!("malformed row {row:?}");
            };
            let ring = snapshots.entry((pool, ejected)).or_insert_with(|| {
                let ring = &rings[pool];
                let idx: Vec<usize> = ejected
                    .split(',')
                    .map(|n| {
                        ring.index_of(n)
                            .unwrap_or_else(|| panic!("{pool}: no server {n}"))
                    })
                    .collect();
                ring.with_ejected(&idx)
            });
            let got = ring.locate_name(&unhex(key_hex));
            if got != Some(want) {
                failures.push(format!(
                    "{pool} -[{ejected}] {key_hex}: got {got:?}, want {want}"
                ));
            }
            checked += 1;
        }
        assert_eq!(checked, 10 * 1000);
        assert!(
            failures.is_empty(),
            "{} mismatches: {:?}",
            failures.len(),
            &failures[..failures.len().min(10)]
        );
    }
}
