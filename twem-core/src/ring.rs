//! The [`Ring`]: which server a key goes to, exactly as nutcracker 0.5.0
//! decides it.
//!
//! A ring is built from the pool's servers (name and weight), a
//! [`HashKind`], a [`Distribution`] and an optional [`HashTag`]. It is an
//! immutable snapshot: ejecting or re-admitting a server builds a new one
//! ([`Ring::with_ejected`], [`Ring::with_live`]), so the routing path reads a
//! ring without taking any lock while a writer swaps in the next one (the
//! `Pool` keeps it in an `arc_swap::ArcSwap<Ring>`).
//!
//! What nutcracker does, and so what this module does:
//! - servers are sorted by name, shorter first, then bytewise, and every index
//!   in this API refers to that order;
//! - `ketama` gives each live server `floorf(weight / total_live_weight * 40 *
//!   nlive) * 4` points, computed in single precision, each group of four
//!   taken from the MD5 of `"<name>-<n>"`; a key goes to the first point at or
//!   after its hash, wrapping round to the first point;
//! - `modula` lays the live servers out weight times each and picks
//!   `hash % total_live_weight`;
//! - `random` picks a live server at random for every key;
//! - the empty key hashes to 0, and a one-server pool never hashes.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::fmt;
use std::hash::BuildHasher;
use std::io::Write as _;
use std::sync::Arc;

use md5::{Digest, Md5};

use crate::hash::{HashKind, HashTag};

/// How keys are spread over a pool's servers (`distribution:` in
/// `nutcracker.yml`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Distribution {
    /// Consistent hashing: ejecting a server moves only its own keys.
    #[default]
    Ketama,
    /// `hash % total weight`: ejecting a server moves most keys.
    Modula,
    /// Any live server, chosen at random for every request.
    Random,
}

impl Distribution {
    /// Every distribution, in nutcracker's documented order.
    pub const ALL: [Distribution; 3] = [
        Distribution::Ketama,
        Distribution::Modula,
        Distribution::Random,
    ];

    /// The config name (`ketama`, `modula`, `random`).
    pub fn name(self) -> &'static str {
        match self {
            Distribution::Ketama => "ketama",
            Distribution::Modula => "modula",
            Distribution::Random => "random",
        }
    }

    /// The distribution configured as `name` (case-sensitive, as nutcracker);
    /// `None` for an unknown name.
    pub fn from_name(name: &str) -> Option<Distribution> {
        Distribution::ALL.into_iter().find(|d| d.name() == name)
    }
}

impl fmt::Display for Distribution {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A server as the ring sees it: its identity and its weight. Addresses play
/// no part in placement.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RingServer {
    /// The server's identity as nutcracker derives it (see
    /// [`server_identity`]); it is hashed into the ketama continuum and it
    /// orders the servers.
    pub name: String,
    /// The configured weight, at least 1.
    pub weight: u32,
}

impl RingServer {
    /// A server named `name` with `weight`.
    pub fn new(name: impl Into<String>, weight: u32) -> RingServer {
        RingServer {
            name: name.into(),
            weight,
        }
    }
}

/// A server's identity as nutcracker derives it from its config entry: the
/// configured `name` if there is one; else `host:port`, but only `host` when
/// the port is 11211 (libmemcached compatibility); and `path:` (with the
/// trailing colon) for a unix socket, which has no port.
///
/// ```
/// use twem_core::ring::server_identity;
///
/// assert_eq!(server_identity("10.0.0.1", Some(6379), None), "10.0.0.1:6379");
/// assert_eq!(server_identity("10.0.0.1", Some(11211), None), "10.0.0.1");
/// assert_eq!(server_identity("/tmp/r.sock", None, None), "/tmp/r.sock:");
/// assert_eq!(server_identity("10.0.0.1", Some(6379), Some("cache-a")), "cache-a");
/// ```
pub fn server_identity(host_or_path: &str, port: Option<u16>, name: Option<&str>) -> String {
    match (name, port) {
        (Some(name), _) if !name.is_empty() => name.to_owned(),
        (_, None) => format!("{host_or_path}:"),
        (_, Some(11211)) => host_or_path.to_owned(),
        (_, Some(port)) => format!("{host_or_path}:{port}"),
    }
}

/// Why a [`Ring`] could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RingError {
    /// The server list is empty.
    #[error("a ring needs at least one server")]
    NoServers,
    /// Two servers have the same identity, so keys could not tell them apart.
    #[error("duplicate server name '{0}'")]
    DuplicateName(String),
    /// A server has weight 0 (nutcracker requires weights of at least 1).
    #[error("server '{0}' has weight 0; weights must be at least 1")]
    ZeroWeight(String),
    /// The weights add up to more than nutcracker's 32-bit total can hold.
    #[error("server weights add up to {0}, more than the maximum 4294967295")]
    TotalWeightTooLarge(u64),
}

/// Maps keys to servers exactly as nutcracker 0.5.0 does; an immutable,
/// cheaply cloned snapshot (`Arc` inside, `Send + Sync`).
///
/// Servers are kept sorted by name as nutcracker sorts them; every index taken
/// or returned refers to [`Ring::servers`]. Ejection and re-admission return a
/// new ring whose continuum is rebuilt over the live servers, as nutcracker
/// does with `auto_eject_hosts: true`; the old snapshot stays valid for
/// whoever still holds it.
///
/// ```
/// use twem_core::hash::{HashKind, HashTag};
/// use twem_core::ring::{Distribution, Ring, RingServer};
///
/// let ring = Ring::new(
///     vec![
///         RingServer::new("10.0.0.2:6379", 1),
///         RingServer::new("10.0.0.1:6379", 1),
///         RingServer::new("10.0.0.3:6379", 2),
///     ],
///     HashKind::Fnv1a_64,
///     Distribution::Ketama,
///     Some(HashTag::new(b'{', b'}')),
/// )?;
///
/// // Sorted by name, as nutcracker indexes them.
/// assert_eq!(ring.servers()[0].name, "10.0.0.1:6379");
///
/// // Keys with the same tag land together.
/// let server = ring.locate(b"user:{42}:name");
/// assert_eq!(server, ring.locate(b"user:{42}:email"));
///
/// // Eject that server: its keys move, the old snapshot is unchanged.
/// let idx = server.expect("all servers are live");
/// let ejected = ring.with_ejected(&[idx]);
/// assert_ne!(ejected.locate(b"user:{42}:name"), Some(idx));
/// assert_eq!(ejected.live_count(), 2);
/// assert_eq!(ring.locate(b"user:{42}:name"), Some(idx));
///
/// // Re-admitting it restores the original placement.
/// let back = ejected.with_live(&[true, true, true]);
/// assert_eq!(back.locate(b"user:{42}:name"), Some(idx));
/// # Ok::<(), twem_core::ring::RingError>(())
/// ```
#[derive(Clone)]
pub struct Ring {
    inner: Arc<Snapshot>,
}

struct Snapshot {
    /// Shared by every snapshot derived from the same config.
    servers: Arc<[RingServer]>,
    live: Vec<bool>,
    live_count: usize,
    hash: HashKind,
    distribution: Distribution,
    hash_tag: Option<HashTag>,
    selector: Selector,
}

/// Per-distribution lookup structure, over live servers only.
enum Selector {
    /// `(point, server index)`, sorted by point.
    Ketama(Vec<(u32, u32)>),
    /// `(cumulative weight up to and including the server, server index)`:
    /// nutcracker's array of each live server repeated `weight` times, kept
    /// as run lengths so a huge weight costs no memory.
    Modula { ends: Vec<(u32, u32)>, total: u32 },
    /// Live server indices.
    Random(Vec<u32>),
}

/// nutcracker's ketama takes the hash of `"<name>-<n>"` into an 86-byte
/// buffer; see [`ketama_continuum`].
const KETAMA_MAX_HOSTLEN: usize = 86;

impl Ring {
    /// Builds the ring with every server live. Servers are sorted by name
    /// (shorter first, then bytewise), as nutcracker orders them.
    ///
    /// Fails on an empty list, a duplicate name, a zero weight, or weights
    /// whose sum overflows 32 bits.
    pub fn new(
        mut servers: Vec<RingServer>,
        hash: HashKind,
        distribution: Distribution,
        hash_tag: Option<HashTag>,
    ) -> Result<Ring, RingError> {
        servers.sort_by(|a, b| name_order(&a.name, &b.name));
        check_sorted(&servers)?;
        let live = vec![true; servers.len()];
        Ok(Ring::build(
            servers.into(),
            live,
            hash,
            distribution,
            hash_tag,
        ))
    }

    /// Whether [`Ring::new`] would accept `servers`, without building the
    /// continuum (for ketama, 160 hashed and sorted points per server): what
    /// config validation needs, at a fraction of the cost.
    pub fn check(servers: &[RingServer]) -> Result<(), RingError> {
        let mut sorted: Vec<&RingServer> = servers.iter().collect();
        sorted.sort_by(|a, b| name_order(&a.name, &b.name));
        check_sorted(&sorted)
    }

    fn build(
        servers: Arc<[RingServer]>,
        live: Vec<bool>,
        hash: HashKind,
        distribution: Distribution,
        hash_tag: Option<HashTag>,
    ) -> Ring {
        let live_servers = || {
            servers
                .iter()
                .zip(&live)
                .enumerate()
                .filter(|(_, (_, &is_live))| is_live)
                .map(|(idx, (server, _))| (idx as u32, server))
        };
        let live_count = live_servers().count();
        let selector = match distribution {
            Distribution::Ketama => Selector::Ketama(ketama_continuum(live_servers())),
            Distribution::Modula => {
                let mut total: u32 = 0;
                let ends = live_servers()
                    .map(|(idx, server)| {
                        // Cannot saturate: Ring::new checked the sum of all
                        // weights fits in 32 bits.
                        total = total.saturating_add(server.weight);
                        (total, idx)
                    })
                    .collect();
                Selector::Modula { ends, total }
            }
            Distribution::Random => Selector::Random(live_servers().map(|(idx, _)| idx).collect()),
        };
        Ring {
            inner: Arc::new(Snapshot {
                servers,
                live,
                live_count,
                hash,
                distribution,
                hash_tag,
                selector,
            }),
        }
    }

    /// The servers, sorted by name; indices elsewhere refer to this order.
    pub fn servers(&self) -> &[RingServer] {
        &self.inner.servers
    }

    /// The index of the server that `key` goes to, or `None` when no server
    /// is live.
    ///
    /// The hash tag, if any, is applied first; an empty key hashes to 0; a
    /// one-server pool answers 0 without hashing (while that server is live);
    /// `random` picks any live server. Allocates nothing.
    pub fn locate(&self, key: &[u8]) -> Option<usize> {
        let snap = &*self.inner;
        if snap.live_count == 0 {
            return None;
        }
        if snap.servers.len() == 1 {
            return Some(0);
        }
        let idx = match &snap.selector {
            Selector::Ketama(points) => {
                let hash = snap.key_hash(key);
                let at = points.partition_point(|&(point, _)| point < hash);
                // Past the last point the continuum wraps to the first.
                points.get(at).or_else(|| points.first())?.1
            }
            Selector::Modula { ends, total } => {
                let slot = snap.key_hash(key).checked_rem(*total)?;
                let at = ends.partition_point(|&(end, _)| end <= slot);
                ends.get(at)?.1
            }
            Selector::Random(live) => {
                let pick = random_below(live.len());
                *live.get(pick)?
            }
        };
        Some(idx as usize)
    }

    /// The name of the server that `key` goes to; see [`Ring::locate`].
    pub fn locate_name(&self, key: &[u8]) -> Option<&str> {
        let idx = self.locate(key)?;
        self.inner.servers.get(idx).map(|s| s.name.as_str())
    }

    /// The index of the server named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.inner
            .servers
            .binary_search_by(|s| name_order(&s.name, name))
            .ok()
    }

    /// Whether server `idx` is live in this snapshot (`false` for an index
    /// out of range).
    pub fn is_live(&self, idx: usize) -> bool {
        self.inner.live.get(idx).copied().unwrap_or(false)
    }

    /// Which servers are live, by index.
    pub fn live_mask(&self) -> &[bool] {
        &self.inner.live
    }

    /// How many servers are live.
    pub fn live_count(&self) -> usize {
        self.inner.live_count
    }

    /// A new snapshot with the servers at `ejected` out, in addition to those
    /// already out here; the continuum is rebuilt over the remaining live
    /// servers exactly as nutcracker rebuilds it. Indices out of range are
    /// ignored.
    pub fn with_ejected(&self, ejected: &[usize]) -> Ring {
        let mut live = self.inner.live.clone();
        for &idx in ejected {
            if let Some(slot) = live.get_mut(idx) {
                *slot = false;
            }
        }
        self.with_live(&live)
    }

    /// A new snapshot in which exactly the servers with `live[idx] == true`
    /// are live (servers past the end of `live` count as live), rebuilt as
    /// nutcracker rebuilds it. Re-admitting every server gives back the
    /// placement of a freshly built ring.
    pub fn with_live(&self, live: &[bool]) -> Ring {
        let snap = &*self.inner;
        let live = (0..snap.servers.len())
            .map(|idx| live.get(idx).copied().unwrap_or(true))
            .collect();
        Ring::build(
            Arc::clone(&snap.servers),
            live,
            snap.hash,
            snap.distribution,
            snap.hash_tag,
        )
    }

    /// The key hash this ring uses.
    pub fn hash(&self) -> HashKind {
        self.inner.hash
    }

    /// The distribution this ring uses.
    pub fn distribution(&self) -> Distribution {
        self.inner.distribution
    }

    /// The hash tag this ring applies before hashing, if any.
    pub fn hash_tag(&self) -> Option<HashTag> {
        self.inner.hash_tag
    }
}

impl Snapshot {
    fn key_hash(&self, key: &[u8]) -> u32 {
        let key = match &self.hash_tag {
            Some(tag) => tag.apply(key),
            None => key,
        };
        // nutcracker never hashes an empty key; it places it at 0.
        if key.is_empty() {
            0
        } else {
            self.hash.hash(key)
        }
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let snap = &*self.inner;
        f.debug_struct("Ring")
            .field("servers", &snap.servers)
            .field("live", &snap.live)
            .field("hash", &snap.hash)
            .field("distribution", &snap.distribution)
            .field("hash_tag", &snap.hash_tag)
            .finish_non_exhaustive()
    }
}

/// nutcracker's server order (`string_compare`): shorter names first, then
/// bytewise.
/// [`Ring::new`]'s rules over servers already in name order, so the first
/// duplicate reported is the same whichever caller asks.
fn check_sorted<S: std::borrow::Borrow<RingServer>>(servers: &[S]) -> Result<(), RingError> {
    if servers.is_empty() {
        return Err(RingError::NoServers);
    }
    if let Some(pair) = servers
        .windows(2)
        .find(|w| w[0].borrow().name == w[1].borrow().name)
    {
        return Err(RingError::DuplicateName(pair[0].borrow().name.clone()));
    }
    if let Some(server) = servers.iter().find(|s| s.borrow().weight == 0) {
        return Err(RingError::ZeroWeight(server.borrow().name.clone()));
    }
    let total: u64 = servers.iter().map(|s| u64::from(s.borrow().weight)).sum();
    if total > u64::from(u32::MAX) {
        return Err(RingError::TotalWeightTooLarge(total));
    }
    Ok(())
}

fn name_order(a: &str, b: &str) -> std::cmp::Ordering {
    a.len()
        .cmp(&b.len())
        .then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// The ketama points of `live` servers (index, server), sorted.
///
/// nutcracker formats `"<name>-<n>"` into an 86-byte buffer and hashes as many
/// bytes as the untruncated text would have, reading past its buffer when the
/// text is longer than 85 bytes; no result can be compatible there, so such
/// names are hashed in full (names that long are very rare: an address and
/// port fit in 22 bytes).
fn ketama_continuum<'a>(
    live: impl Iterator<Item = (u32, &'a RingServer)> + Clone,
) -> Vec<(u32, u32)> {
    let nlive = live.clone().count();
    // Cannot overflow: Ring::new checked the sum of all weights.
    let total_weight: u32 = live
        .clone()
        .map(|(_, s)| s.weight)
        .fold(0, u32::saturating_add);
    let mut points = Vec::with_capacity(nlive * 160);
    let mut host = Vec::with_capacity(KETAMA_MAX_HOSTLEN);
    for (idx, server) in live {
        for n in 0..ketama_points(server.weight, total_weight, nlive) / 4 {
            host.clear();
            // Writing into a Vec cannot fail.
            let _ = write!(host, "{}-{}", server.name, n);
            let digest = Md5::digest(&host);
            for quad in digest.chunks_exact(4) {
                if let [a, b, c, d] = *quad {
                    points.push((u32::from_le_bytes([a, b, c, d]), idx));
                }
            }
        }
    }
    // Stable, so equal points keep server order (what glibc's merge-sort
    // qsort gives nutcracker).
    points.sort_by_key(|&(point, _)| point);
    points
}

/// A server's ketama point count, computed in single precision exactly as
/// nutcracker writes it, so unequal weights can round a server to 0 points.
fn ketama_points(weight: u32, total_weight: u32, nlive: usize) -> u32 {
    let pct = weight as f32 / total_weight as f32;
    let share = pct * 160.0_f32 / 4.0_f32 * nlive as f32;
    // C adds a double epsilon to the float, then converts back to float.
    let nudged = (f64::from(share) + 0.000_000_000_1) as f32;
    (nudged.floor() as u32).saturating_mul(4)
}

thread_local! {
    /// Per-thread xorshift state, so `random` distribution costs no shared
    /// cache line between threads.
    static RNG: Cell<u64> = Cell::new(RandomState::new().hash_one(0u64) | 1);
}

/// A random number in `0..n` (0 when `n == 0`); modulo bias is irrelevant at
/// pool sizes.
pub(crate) fn random_below(n: usize) -> usize {
    if n == 0 {
        return 0;
    }
    let x = RNG.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        state.set(x);
        x
    });
    (x % n as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;

    fn servers(names_weights: &[(&str, u32)]) -> Vec<RingServer> {
        names_weights
            .iter()
            .map(|&(name, weight)| RingServer::new(name, weight))
            .collect()
    }

    fn ring(names_weights: &[(&str, u32)], hash: HashKind, dist: Distribution) -> Ring {
        Ring::new(servers(names_weights), hash, dist, None).expect("valid ring")
    }

    fn ketama_points_of(ring: &Ring, idx: usize) -> usize {
        match &ring.inner.selector {
            Selector::Ketama(points) => points.iter().filter(|p| p.1 as usize == idx).count(),
            _ => panic!("not a ketama ring"),
        }
    }

    fn sample_keys() -> Vec<Vec<u8>> {
        (0..2000).map(|i| format!("key:{i}").into_bytes()).collect()
    }

    // Servers are sorted shorter-name first, then bytewise, whatever the
    // config order.
    #[test]
    fn servers_sorted_by_length_then_bytes() {
        let r = ring(
            &[("bb", 1), ("a", 1), ("ab", 1), ("B", 1), ("ccc", 1)],
            HashKind::Md5,
            Distribution::Ketama,
        );
        let names: Vec<&str> = r.servers().iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["B", "a", "ab", "bb", "ccc"]);
        assert_eq!(r.index_of("ab"), Some(2));
        assert_eq!(r.index_of("ccc"), Some(4));
        assert_eq!(r.index_of("c"), None);
    }

    // The identity rule: name, else host:port, else host for 11211, path: for
    // unix sockets.
    #[test]
    fn identity_rule() {
        assert_eq!(server_identity("h", Some(6379), Some("n")), "n");
        assert_eq!(server_identity("h", Some(6379), None), "h:6379");
        assert_eq!(server_identity("h", Some(11211), None), "h");
        assert_eq!(server_identity("/s.sock", None, None), "/s.sock:");
        assert_eq!(server_identity("/s.sock", None, Some("n")), "n");
        // An empty name is no name.
        assert_eq!(server_identity("h", Some(1), Some("")), "h:1");
    }

    // Construction rejects what nutcracker's config rejects.
    #[test]
    fn invalid_rings_rejected() {
        let build = |s: &[(&str, u32)]| {
            Ring::new(servers(s), HashKind::Md5, Distribution::Ketama, None).map(|_| ())
        };
        assert_eq!(build(&[]), Err(RingError::NoServers));
        assert_eq!(
            build(&[("a", 1), ("b", 1), ("a", 2)]),
            Err(RingError::DuplicateName("a".into()))
        );
        assert_eq!(
            build(&[("a", 1), ("b", 0)]),
            Err(RingError::ZeroWeight("b".into()))
        );
        assert_eq!(
            build(&[("a", u32::MAX), ("b", 1)]),
            Err(RingError::TotalWeightTooLarge(1 << 32))
        );
        assert!(RingError::DuplicateName("x".into())
            .to_string()
            .contains("'x'"));
    }

    // The empty key hashes to 0, so it goes to the server owning point 0 (the
    // first point of the continuum), whatever the hash function.
    #[test]
    fn empty_key_hashes_to_zero() {
        for hash in [HashKind::Md5, HashKind::Fnv1a_64, HashKind::Murmur] {
            let r = ring(&[("a", 1), ("b", 1), ("c", 1)], hash, Distribution::Ketama);
            let Selector::Ketama(points) = &r.inner.selector else {
                unreachable!()
            };
            assert_eq!(r.locate(b""), Some(points[0].1 as usize));
            // md5("") is not 0, so this is not what hashing would give.
            assert_eq!(r.inner.key_hash(b""), 0);
        }
        let m = ring(
            &[("a", 1), ("b", 1), ("c", 1)],
            HashKind::Md5,
            Distribution::Modula,
        );
        assert_eq!(m.locate(b""), Some(0));
    }

    // A one-server pool answers 0 for every key, and None once ejected.
    #[test]
    fn one_server_pool() {
        for dist in Distribution::ALL {
            let r = ring(&[("only", 3)], HashKind::Md5, dist);
            for key in sample_keys().iter().take(50) {
                assert_eq!(r.locate(key), Some(0));
            }
            assert_eq!(r.locate_name(b"x"), Some("only"));
            assert_eq!(r.with_ejected(&[0]).locate(b"x"), None);
        }
    }

    // p90_omega (from the golden pools): weights that round one server down
    // to 0 ketama points. It then receives no key at all, as under nutcracker.
    #[test]
    fn zero_point_server_receives_nothing() {
        // 1 / 100001 * 40 * 2 = 0.0008 -> 0 points; 100000 / 100001 * 80 =
        // 79.9992 -> 79 hashes of 4 points.
        let r = ring(
            &[("127.0.0.1:11214", 100_000), ("127.0.0.1:11215", 1)],
            HashKind::Fnv1a_64,
            Distribution::Ketama,
        );
        let omega = r.index_of("127.0.0.1:11215").expect("present");
        let big = r.index_of("127.0.0.1:11214").expect("present");
        assert_eq!(ketama_points_of(&r, omega), 0);
        assert_eq!(ketama_points_of(&r, big), 316);
        assert!(sample_keys().iter().all(|k| r.locate(k) == Some(big)));
        // With the big server ejected, omega is alone and gets its 160 points.
        let alone = r.with_ejected(&[big]);
        assert_eq!(ketama_points_of(&alone, omega), 160);
        assert_eq!(alone.locate(b"k"), Some(omega));
    }

    // Point counts follow the single-precision formula: equal weights give
    // 160 points each.
    #[test]
    fn ketama_equal_weights_give_160_points() {
        let r = ring(
            &[("a", 1), ("b", 1), ("c", 1)],
            HashKind::Md5,
            Distribution::Ketama,
        );
        for idx in 0..3 {
            assert_eq!(ketama_points_of(&r, idx), 160);
        }
        assert_eq!(ketama_points(1, 3, 3), 160);
        // 2/3 * 40 * 2 = 53.3 and 1/3 * 40 * 2 = 26.7, floored, times 4.
        assert_eq!(ketama_points(2, 3, 2), 212);
        assert_eq!(ketama_points(1, 3, 2), 104);
    }

    // A hash beyond the last point wraps to the first point.
    #[test]
    fn ketama_wraps_around() {
        let r = ring(&[("a", 1), ("b", 1)], HashKind::Md5, Distribution::Ketama);
        let Selector::Ketama(points) = &r.inner.selector else {
            unreachable!()
        };
        let last = points.last().expect("points").0;
        assert!(last < u32::MAX, "md5 points are never all at u32::MAX");
        // Find a key hashing above the last point: it must map to points[0].
        let key = (0..100_000u32)
            .map(|i| format!("k{i}").into_bytes())
            .find(|k| HashKind::Md5.hash(k) > last)
            .expect("some key hashes past the last point");
        assert_eq!(r.locate(&key), Some(points[0].1 as usize));
    }

    // Modula is weighted: a weight-3 server takes three slots in order.
    #[test]
    fn modula_is_weighted() {
        let r = ring(
            &[("a", 1), ("b", 3)],
            HashKind::Crc32a,
            Distribution::Modula,
        );
        for key in sample_keys() {
            let want = match HashKind::Crc32a.hash(&key) % 4 {
                0 => 0,
                _ => 1,
            };
            assert_eq!(r.locate(&key), Some(want));
        }
    }

    // Ejecting every server leaves nothing to locate.
    #[test]
    fn all_ejected_locates_none() {
        for dist in Distribution::ALL {
            let r = ring(&[("a", 1), ("b", 2), ("c", 3)], HashKind::Murmur, dist);
            let dead = r.with_ejected(&[0, 1, 2]);
            assert_eq!(dead.live_count(), 0);
            assert_eq!(dead.locate(b"key"), None);
            assert_eq!(dead.locate_name(b"key"), None);
            assert!(!dead.is_live(0));
        }
    }

    // Ejection keeps earlier ejections, ignores bad indices and never routes
    // to an ejected server.
    #[test]
    fn ejection_accumulates() {
        let r = ring(
            &[("a", 1), ("b", 1), ("c", 1)],
            HashKind::Md5,
            Distribution::Ketama,
        );
        let one = r.with_ejected(&[1, 99]);
        let two = one.with_ejected(&[2]);
        assert_eq!(two.live_mask(), &[true, false, false]);
        assert!(sample_keys().iter().all(|k| two.locate(k) == Some(0)));
        assert!(!r.is_live(99));
    }

    // Re-admission restores the exact original placement, for every
    // distribution that is deterministic.
    #[test]
    fn readmission_restores_placement() {
        for dist in [Distribution::Ketama, Distribution::Modula] {
            let r = ring(
                &[("a", 1), ("b", 2), ("c", 3), ("d", 1)],
                HashKind::Hsieh,
                dist,
            );
            let ejected = r.with_ejected(&[1, 3]);
            let back = ejected.with_live(&[true; 4]);
            let mut moved = 0;
            for key in sample_keys() {
                assert_eq!(back.locate(&key), r.locate(&key));
                if ejected.locate(&key) != r.locate(&key) {
                    moved += 1;
                }
                assert!(matches!(ejected.locate(&key), Some(0 | 2)));
            }
            assert!(moved > 0, "ejection must move some keys ({dist})");
        }
    }

    // Ketama ejection only moves the ejected server's keys.
    #[test]
    fn ketama_ejection_moves_only_ejected_keys() {
        let r = ring(
            &[("a", 1), ("b", 1), ("c", 1), ("d", 1)],
            HashKind::Fnv1a_64,
            Distribution::Ketama,
        );
        let ejected = r.with_ejected(&[2]);
        for key in sample_keys() {
            let before = r.locate(&key);
            if before != Some(2) {
                assert_eq!(ejected.locate(&key), before);
            }
        }
    }

    // Random distribution returns only live servers, and all of them.
    #[test]
    fn random_returns_only_live_servers() {
        let r = ring(
            &[("a", 1), ("b", 1), ("c", 1), ("d", 1)],
            HashKind::Md5,
            Distribution::Random,
        );
        let ejected = r.with_ejected(&[1]);
        let mut seen = [0usize; 4];
        for _ in 0..4000 {
            let idx = ejected.locate(b"same key").expect("live servers");
            seen[idx] += 1;
        }
        assert_eq!(seen[1], 0);
        assert!(seen[0] > 0 && seen[2] > 0 && seen[3] > 0, "{seen:?}");
    }

    // The hash tag is applied before hashing.
    #[test]
    fn hash_tag_colocates_keys() {
        let r = Ring::new(
            servers(&[("a", 1), ("b", 1), ("c", 1), ("d", 1), ("e", 1)]),
            HashKind::Crc16,
            Distribution::Modula,
            Some(HashTag::new(b'{', b'}')),
        )
        .expect("valid");
        for i in 0..200 {
            let tagged = format!("x{i}:{{user7}}");
            assert_eq!(r.locate(tagged.as_bytes()), r.locate(b"user7"));
        }
        // An empty tag hashes the whole key, not the empty string.
        assert_eq!(r.inner.key_hash(b"{}x"), HashKind::Crc16.hash(b"{}x"));
    }

    // Accessors report what the ring was built with.
    #[test]
    fn accessors() {
        let tag = Some(HashTag::new(b'$', b'$'));
        let r = Ring::new(
            servers(&[("a", 1), ("b", 1)]),
            HashKind::Jenkins,
            Distribution::Modula,
            tag,
        )
        .expect("valid");
        assert_eq!(r.hash(), HashKind::Jenkins);
        assert_eq!(r.distribution(), Distribution::Modula);
        assert_eq!(r.hash_tag(), tag);
        assert_eq!(r.live_count(), 2);
        assert!(format!("{r:?}").contains("Jenkins"));
    }

    // Distribution names round-trip.
    #[test]
    fn distribution_names() {
        for d in Distribution::ALL {
            assert_eq!(Distribution::from_name(d.name()), Some(d));
        }
        assert_eq!(Distribution::from_name("Ketama"), None);
        assert_eq!(Distribution::default(), Distribution::Ketama);
    }

    // The ring is shareable across threads.
    #[test]
    fn ring_is_send_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Ring>();
    }

    proptest::proptest! {
        // Whatever the key, weights, hash, distribution, tag and live set,
        // locate answers a live server, or None exactly when none is live.
        #[test]
        fn locate_only_answers_live_servers(
            key in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
            weights in proptest::collection::vec(1u32..2000, 1..8),
            live in proptest::collection::vec(proptest::bool::ANY, 8),
            hash_idx in 0usize..13,
            dist_idx in 0usize..3,
            tag in proptest::option::of((proptest::num::u8::ANY, proptest::num::u8::ANY)),
        ) {
            let list = weights
                .iter()
                .enumerate()
                .map(|(i, &w)| RingServer::new(format!("s{i}"), w))
                .collect();
            let r = Ring::new(
                list,
                HashKind::ALL[hash_idx],
                Distribution::ALL[dist_idx],
                tag.map(|(open, close)| HashTag::new(open, close)),
            )
            .expect("valid ring");
            let snap = r.with_live(&live);
            let any_live = (0..weights.len()).any(|i| snap.is_live(i));
            match snap.locate(&key) {
                Some(idx) => proptest::prop_assert!(snap.is_live(idx)),
                None => proptest::prop_assert!(!any_live),
            }
        }
    }

    // Ring::check accepts and refuses exactly what Ring::new does, with the
    // same error, since validation relies on it to keep ring() infallible.
    #[test]
    fn check_agrees_with_new() {
        let s = |name: &str, weight| RingServer::new(name, weight);
        let cases: Vec<Vec<RingServer>> = vec![
            vec![],
            vec![s("a", 1)],
            vec![s("bb", 1), s("a", 2), s("bb", 3), s("a", 1)],
            vec![s("a", 1), s("b", 0)],
            vec![s("a", u32::MAX), s("b", 1)],
            vec![s("a", u32::MAX - 1), s("b", 1)],
        ];
        for servers in cases {
            let built = Ring::new(servers.clone(), HashKind::Md5, Distribution::Ketama, None);
            assert_eq!(Ring::check(&servers), built.map(|_| ()), "{servers:?}");
        }
    }
}
