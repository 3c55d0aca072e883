//! Network namespaces standing in for separate machines: each simulated host gets
//! a namespace of its own, joined to the test's namespace by a veth pair on a /30
//! of its own. Names carry the test's PID and a random part, so parallel runs never
//! share one; everything is removed on drop, pass or fail.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::net::Ipv4Addr;
use std::process::Command;

/// A random number from std's per-process hash keys (no extra dependency).
pub fn random_u64() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    hasher.finish()
}

/// Runs `ip ARGS`, panicking with its output when it fails.
pub fn ip(args: &[&str]) {
    let out = match Command::new("ip").args(args).output() {
        Ok(out) => out,
        Err(err) => panic!(
            "cannot run `ip` ({err}): this test needs iproute2 and root; \
             run scripts/install-deps as root"
        ),
    };
    assert!(
        out.status.success(),
        "`ip {}` failed ({}): {}; the test needs root (CAP_NET_ADMIN) for network namespaces",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

/// Like [`ip`], but for clean-up: a failure is reported, not raised (a panic in
/// `drop` during an unwinding test would abort and hide the first failure).
fn ip_quiet(args: &[&str]) {
    match Command::new("ip").args(args).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => eprintln!(
            "clean-up: `ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ),
        Err(err) => eprintln!("clean-up: cannot run `ip {}`: {err}", args.join(" ")),
    }
}

/// A /24 of 10.0.0.0/8 that no interface of this machine uses, picked at random so
/// that two runs at once are unlikely to collide (and checked, so that an address
/// already configured here is never shadowed).
pub fn free_subnet() -> [u8; 2] {
    let out = Command::new("ip")
        .args(["-4", "-o", "addr", "show"])
        .output()
        .expect("run `ip -4 -o addr show` (iproute2; run scripts/install-deps)");
    let used = String::from_utf8_lossy(&out.stdout).into_owned();
    for _ in 0..64 {
        let r = random_u64();
        let net = [200 + (r % 50) as u8, (r >> 8) as u8];
        if !used.contains(&format!("inet 10.{}.{}.", net[0], net[1])) {
            return net;
        }
    }
    panic!("no free 10.200-249.x.0/24 among 64 random picks: too many interfaces here?\n{used}");
}

/// One simulated host: a network namespace and the veth pair that joins it to the
/// test's namespace. `outer` is the test side's address, `inner` the host's.
pub struct Netns {
    pub name: String,
    pub veth: String,
    pub outer: Ipv4Addr,
    pub inner: Ipv4Addr,
}

impl Netns {
    /// Creates namespace `zl-hosts-<pid>-<tag>-<label>` with `eth0` = `10.a.b.(4i+2)/30`
    /// inside and `zl<tag><label>` = `10.a.b.(4i+1)/30` outside, both up, plus the
    /// namespace's loopback. `index` picks the /30 within the subnet.
    pub fn create(tag: &str, label: &str, subnet: [u8; 2], index: u8) -> Netns {
        let name = format!("zl-hosts-{}-{tag}-{label}", std::process::id());
        let veth = format!("zl{tag}{label}");
        assert!(veth.len() <= 15, "interface name {veth} too long");
        let outer = Ipv4Addr::new(10, subnet[0], subnet[1], 4 * index + 1);
        let inner = Ipv4Addr::new(10, subnet[0], subnet[1], 4 * index + 2);
        ip(&["netns", "add", &name]);
        // From here on, drop removes whatever exists, even if a later step panics.
        let ns = Netns {
            name,
            veth,
            outer,
            inner,
        };
        ip(&[
            "link", "add", &ns.veth, "type", "veth", "peer", "name", "eth0", "netns", &ns.name,
        ]);
        ip(&["addr", "add", &format!("{outer}/30"), "dev", &ns.veth]);
        ip(&["link", "set", &ns.veth, "up"]);
        ns.exec_ip(&["addr", "add", &format!("{inner}/30"), "dev", "eth0"]);
        ns.exec_ip(&["link", "set", "eth0", "up"]);
        ns.exec_ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip ARGS` inside the namespace.
    fn exec_ip(&self, args: &[&str]) {
        let mut all = vec!["-n", self.name.as_str()];
        all.extend_from_slice(args);
        ip(&all);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end of a veth pair deletes both; the namespace goes once no
        // process holds it (the test kills its workers before this runs).
        ip_quiet(&["link", "del", &self.veth]);
        ip_quiet(&["netns", "del", &self.name]);
    }
}
