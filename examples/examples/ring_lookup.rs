//! Where keys live, with no I/O: build a [`Ring`] from a `nutcracker.yml`
//! snippet, print which server each of a few keys maps to, then eject one
//! server and show which keys move (with ketama, only that server's keys).
//!
//! ```sh
//! cargo run -p twem-examples --example ring_lookup
//! ```
//!
//! The answers are nutcracker's own: a twemproxy, a nutcracker or an embedded
//! `Pool` on the same config put these keys on the same servers.

use std::process::ExitCode;

use twem_core::config::Config;
use twem_core::Ring;

/// The config is the file format nutcracker reads; the listen address is
/// never bound here, only the ring is built.
const CONFIG: &str = "\
cache:
  listen: 127.0.0.1:22121
  hash: fnv1a_64
  hash_tag: \"{}\"
  distribution: ketama
  redis: true
  auto_eject_hosts: true
  servers:
   - 10.0.0.1:6379:1 redis-1
   - 10.0.0.2:6379:1 redis-2
   - 10.0.0.3:6379:2 redis-3
";

const KEYS: [&str; 8] = [
    "user:1",
    "user:2",
    "user:3",
    "session:abc",
    "session:def",
    // The hash tag makes these two hash as "42" and so share a server,
    // which is what lets MULTI-less multi-key scripts work.
    "user:{42}:name",
    "user:{42}:email",
    "",
];

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ring_lookup: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let config = Config::from_yaml(CONFIG)?;
    let pool = config
        .pool("cache")
        .ok_or("the config has no pool \"cache\"")?;
    let ring = pool.ring()?;

    println!(
        "pool {}: {} servers, hash {}, distribution {}",
        pool.name,
        ring.servers().len(),
        ring.hash(),
        ring.distribution()
    );
    for s in ring.servers() {
        println!("  {} (weight {})", s.name, s.weight);
    }

    // Eject the heaviest server, as auto_eject_hosts would after
    // server_failure_limit failures; the continuum is rebuilt without it.
    let victim = "redis-3";
    let idx = ring
        .index_of(victim)
        .ok_or_else(|| format!("no server named {victim}"))?;
    let ejected = ring.with_ejected(&[idx]);

    println!("\n{:<18} {:<10} {victim} ejected", "key", "server");
    let mut moved = 0;
    for key in KEYS {
        let before = name_of(&ring, key)?;
        let after = name_of(&ejected, key)?;
        if before != after {
            moved += 1;
        }
        println!("{:<18} {:<10} {after}", format!("{key:?}"), before);
    }
    println!("\n{moved} of {} keys moved", KEYS.len());

    // Over many keys: the shares follow the weights. Ejecting moves the
    // ejected server's keys, plus a few others: nutcracker's ketama gives
    // each server `weight / total * 40 * live_servers` point groups, so the
    // survivors gain points when one leaves and take some keys from each
    // other.
    const N: usize = 10_000;
    let mut share = vec![0usize; ring.servers().len()];
    let (mut moved, mut shuffled) = (0, 0);
    for i in 0..N {
        let key = format!("key:{i}");
        let before = ring.locate(key.as_bytes()).ok_or("no live server")?;
        let after = ejected.locate(key.as_bytes()).ok_or("no live server")?;
        if let Some(n) = share.get_mut(before) {
            *n += 1;
        }
        if before != after {
            if before == idx {
                moved += 1;
            } else {
                shuffled += 1;
            }
        }
    }
    println!("\nover {N} keys:");
    for (s, n) in ring.servers().iter().zip(&share) {
        println!(
            "  {:<8} {n:>5} keys ({:.1}%)",
            s.name,
            *n as f64 * 100.0 / N as f64
        );
    }
    println!(
        "  with {victim} ejected: its {moved} keys moved, and {shuffled} keys of live servers too"
    );
    Ok(())
}

fn name_of<'r>(ring: &'r Ring, key: &str) -> Result<&'r str, String> {
    ring.locate_name(key.as_bytes())
        .ok_or_else(|| format!("no live server for {key:?}"))
}
