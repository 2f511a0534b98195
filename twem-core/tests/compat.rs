//! Golden data from nutcracker 0.5.0 (see `tests/data/README.md`): every row
//! of every file must match, or a key would move when nutcracker is swapped
//! for twem.

use std::collections::HashMap;

use twem_core::config::Config;
use twem_core::hash::{HashKind, HashTag};
use twem_core::ring::{server_identity, Distribution, Ring, RingServer};
use yaml_rust2::YamlLoader;

const HASHES: &str = include_str!("data/hashes.tsv");
const POOLS: &str = include_str!("data/pools.yml");
const PLACEMENT: &str = include_str!("data/placement.tsv");
const PLACEMENT_EJECTED: &str = include_str!("data/placement_ejected.tsv");

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

/// Checks every data row of a golden file: `check` gets the row's `N`
/// columns and says what is wrong with it, if anything. Asserts that the file
/// holds `expected` rows and that none is wrong (showing the first ten).
fn check_rows<'a, const N: usize>(
    text: &'a str,
    expected: usize,
    mut check: impl FnMut([&'a str; N]) -> Option<String>,
) {
    let mut checked = 0;
    let mut failures = Vec::new();
    for row in rows(text) {
        let Ok(columns) = <[&str; N]>::try_from(&row[..]) else {
            panic!("malformed row {row:?}");
        };
        failures.extend(check(columns));
        checked += 1;
    }
    assert_eq!(checked, expected, "golden file is incomplete");
    assert!(
        failures.is_empty(),
        "{} mismatches, first: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
}

// Each of nutcracker's 12 hashes over all 1,000 keys gives nutcracker's value.
#[test]
fn every_hash_row_matches() {
    check_rows(HASHES, 12 * 1000, |[name, key_hex, value]| {
        let kind = HashKind::from_name(name).unwrap_or_else(|| panic!("unknown hash {name}"));
        assert!(kind.nutcracker_compatible());
        let expected: u32 = value.parse().expect("decimal u32");
        let got = kind.hash(&unhex(key_hex));
        (got != expected).then(|| format!("{name} {key_hex}: got {got}, want {expected}"))
    });
}

/// Every pool of pools.yml as the config parser reads it, with its ring
/// (all servers live) and whether it ejects hosts.
fn config_rings() -> HashMap<String, (Ring, bool)> {
    let config = Config::from_yaml(POOLS).unwrap_or_else(|e| panic!("pools.yml: {e}"));
    config
        .pools
        .iter()
        .map(|pool| {
            let ring = pool.ring().unwrap_or_else(|e| panic!("{}: {e}", pool.name));
            (pool.name.clone(), (ring, pool.auto_eject_hosts))
        })
        .collect()
}

// Every placement row: pools.yml through the config parser, then the Ring.
#[test]
fn every_placement_row_matches() {
    let rings = config_rings();
    assert_eq!(rings.len(), 30);
    check_rows(PLACEMENT, 30 * 1000, |[pool, key_hex, want]| {
        let (ring, _) = &rings[pool];
        let got = ring.locate_name(&unhex(key_hex));
        (got != Some(want)).then(|| format!("{pool} {key_hex}: got {got:?}, want {want}"))
    });
}

// Every row after ejection: the ring of the configured pool with the listed
// servers ejected, rebuilt over the live ones as nutcracker does.
#[test]
fn every_ejected_placement_row_matches() {
    let rings = config_rings();
    let mut snapshots: HashMap<(&str, &str), Ring> = HashMap::new();
    check_rows(
        PLACEMENT_EJECTED,
        10 * 1000,
        |[pool, ejected, key_hex, want]| {
            let ring = snapshots.entry((pool, ejected)).or_insert_with(|| {
                let (ring, auto_eject) = &rings[pool];
                assert!(auto_eject, "{pool} ejects without auto_eject_hosts");
                let idx: Vec<usize> = ejected
                    .split(',')
                    .map(|n| {
                        ring.index_of(n)
                            .unwrap_or_else(|| panic!("{pool}: no server {n}"))
                    })
                    .collect();
                let snapshot = ring.with_ejected(&idx);
                assert_eq!(snapshot.live_count(), ring.servers().len() - idx.len());
                snapshot
            });
            let got = ring.locate_name(&unhex(key_hex));
            (got != Some(want))
                .then(|| format!("{pool} -[{ejected}] {key_hex}: got {got:?}, want {want}"))
        },
    );
    assert_eq!(snapshots.len(), 10);
}

/// Reads a `servers` entry (`host:port:weight [name]` or `/path:weight
/// [name]`) without the config parser.
fn parse_server_by_hand(entry: &str) -> RingServer {
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

// The config parser builds the same rings as pools.yml read by hand here
// (names, weights, order, hash, distribution, tag): a second reading that
// would catch the two drifting apart.
#[test]
fn config_rings_match_hand_parsed_pools() {
    let rings = config_rings();
    let docs = YamlLoader::load_from_str(POOLS).expect("yaml");
    let root = docs[0].as_hash().expect("mapping");
    assert_eq!(root.len(), rings.len());
    for (name, pool) in root {
        let name = name.as_str().expect("pool name");
        let get = |k: &str| pool[k].as_str();
        let servers = pool["servers"]
            .as_vec()
            .expect("servers")
            .iter()
            .map(|s| parse_server_by_hand(s.as_str().expect("server string")))
            .collect();
        let hash = HashKind::from_name(get("hash").unwrap_or("fnv1a_64")).expect("hash");
        let dist =
            Distribution::from_name(get("distribution").unwrap_or("ketama")).expect("distribution");
        let tag = get("hash_tag").map(|t| HashTag::from_bytes(t.as_bytes()).expect("tag"));
        let by_hand = Ring::new(servers, hash, dist, tag).expect("valid pool");
        let (from_config, _) = &rings[name];
        assert_eq!(from_config.servers(), by_hand.servers(), "{name}");
        assert_eq!(from_config.hash(), by_hand.hash(), "{name}");
        assert_eq!(from_config.distribution(), by_hand.distribution(), "{name}");
        assert_eq!(from_config.hash_tag(), by_hand.hash_tag(), "{name}");
    }
}
