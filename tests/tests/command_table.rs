//! The committed command table is Redis's own: `scripts/gen-commands.py`,
//! run against a live redis-server (the one CI installs, Debian's 7.0.15),
//! writes exactly `twem-proto/src/command/generated.rs`. A difference means
//! the file was edited by hand, or the generator changed without the file
//! being regenerated (or Redis changed: regenerate and review the diff).

use std::path::Path;
use std::process::Command;

use twem_tests::{Redis, TempDir};

#[test]
fn generated_table_is_redis_own() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let committed = root.join("twem-proto/src/command/generated.rs");
    let redis = Redis::start();
    let dir = TempDir::new("gen-commands");
    let out = dir.path().join("generated.rs");
    let status = Command::new("python3")
        .arg(root.join("scripts/gen-commands.py"))
        .args(["--host", "127.0.0.1", "--port", &redis.port.to_string()])
        .arg("--out")
        .arg(&out)
        .status()
        .expect("python3 runs");
    assert!(status.success(), "gen-commands.py failed: {status}");
    let want = std::fs::read_to_string(&committed).expect("committed table");
    let got = std::fs::read_to_string(&out).expect("generated table");
    if got != want {
        let line = got
            .lines()
            .zip(want.lines())
            .position(|(g, w)| g != w)
            .map_or_else(|| "(length)".to_string(), |i| format!("{}", i + 1));
        panic!(
            "twem-proto/src/command/generated.rs differs from the generator's output at line {line}: \
             run python3 scripts/gen-commands.py and review the diff"
        );
    }
}
