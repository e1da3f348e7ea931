//! A network namespace joined to this machine by a veth pair, for partition tests: a process
//! run inside it ([`Netns::command`]) reaches the host only through the pair, and taking the
//! host's end down ([`Netns::link_down`]) cuts it off as a pulled cable would (packets vanish,
//! nothing answers) until [`Netns::link_up`]. Everything is made with iproute2's `ip` (root
//! needed) and removed on drop, also when the test panics.
//!
//! Each namespace gets its own /30 in 10.213.0.0/16: the host end is `.1` of the block, the
//! namespace end `.2`. Blocks are claimed by creating the namespace `kiln-<block>` (creating an
//! existing name fails), so concurrent test processes never share one; the search starts at a
//! block derived from the process ID. Only these addresses (and loopback) are ever targets.
#![allow(dead_code)] // each includer uses its own part

use std::net::Ipv4Addr;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// /30 blocks in 10.213.0.0/16.
const BLOCKS: u32 = 1 << 14;
/// How long a link may take to report the state it was set to.
const LINK_STATE_WAIT: Duration = Duration::from_secs(10);

/// A namespace and its veth pair; both are deleted on drop.
pub struct Netns {
    /// The namespace's name (`ip netns exec NAME …`).
    pub name: String,
    /// The veth end on the host (this process's namespace), holding [`Netns::host_addr`].
    pub host_if: String,
    /// The veth end inside the namespace, holding [`Netns::ns_addr`].
    pub ns_if: String,
    /// The host's address on the pair: where a server the namespace should reach listens.
    pub host_addr: Ipv4Addr,
    /// The namespace's address on the pair.
    pub ns_addr: Ipv4Addr,
}

/// Runs `ip ARGS`; its output, or a panic naming the command and what it said.
fn ip(args: &[&str]) -> Output {
    let out = Command::new("ip").args(args).output().unwrap_or_else(|e| {
        panic!("running `ip {}`: {e} (partition tests need iproute2)", args.join(" "))
    });
    if !out.status.success() {
        panic!(
            "`ip {}` failed (partition tests need root): {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out
}

impl Netns {
    /// A new namespace with its veth pair up and addressed.
    pub fn new() -> Netns {
        let start = std::process::id().wrapping_mul(64) % BLOCKS;
        let block = (0..BLOCKS)
            .map(|i| (start + i) % BLOCKS)
            .find(|block| {
                let name = format!("kiln-{block}");
                let out = Command::new("ip")
                    .args(["netns", "add", &name])
                    .output()
                    .expect("running `ip netns add` (partition tests need iproute2)");
                let said = String::from_utf8_lossy(&out.stderr);
                match out.status.success() {
                    true => true,
                    false if said.contains("File exists") => false,
                    false => {
                        panic!("`ip netns add {name}` failed (partition tests need root): {said}")
                    }
                }
            })
            .expect("a free /30 in 10.213.0.0/16");
        let base = u32::from(Ipv4Addr::new(10, 213, 0, 0)) + block * 4;
        // From here on, drop removes whatever was made.
        let netns = Netns {
            name: format!("kiln-{block}"),
            host_if: format!("kh{block}"),
            ns_if: format!("kn{block}"),
            host_addr: Ipv4Addr::from(base + 1),
            ns_addr: Ipv4Addr::from(base + 2),
        };
        let (name, host_if, ns_if) = (&netns.name, &netns.host_if, &netns.ns_if);
        ip(&["link", "add", host_if, "type", "veth", "peer", "name", ns_if, "netns", name]);
        ip(&["addr", "add", &format!("{}/30", netns.host_addr), "dev", host_if]);
        ip(&["-n", name, "addr", "add", &format!("{}/30", netns.ns_addr), "dev", ns_if]);
        ip(&["-n", name, "link", "set", "lo", "up"]);
        ip(&["-n", name, "link", "set", ns_if, "up"]);
        netns.link_up();
        netns
    }

    /// `program` to be run inside the namespace (`ip netns exec NAME program`); add its
    /// arguments and environment as to any command.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name]).arg(program);
        command
    }

    /// Cuts the namespace off: the host's end goes down, the namespace's end loses its carrier.
    /// Returns once both ends say so.
    pub fn link_down(&self) {
        ip(&["link", "set", &self.host_if, "down"]);
        self.wait_for_state("DOWN", "DOWN");
    }

    /// Joins the namespace again. Returns once both ends are up and have forgotten their
    /// neighbours: an address resolution still retrying from while the link was down would
    /// otherwise fail the first packets after it ("No route to host").
    pub fn link_up(&self) {
        ip(&["link", "set", &self.host_if, "up"]);
        self.wait_for_state("UP", "UP");
        ip(&["neigh", "flush", "dev", &self.host_if]);
        ip(&["-n", &self.name, "neigh", "flush", "dev", &self.ns_if]);
    }

    /// Waits until `ip link` reports these operational states of the host's and the
    /// namespace's end: the kernel applies carrier changes asynchronously.
    fn wait_for_state(&self, host: &str, ns: &str) {
        let deadline = Instant::now() + LINK_STATE_WAIT;
        loop {
            let host_now = state(&ip(&["-o", "link", "show", &self.host_if]));
            let ns_now = state(&ip(&["-n", &self.name, "-o", "link", "show", &self.ns_if]));
            if host_now == host && ns_now == ns {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} is {host_now} and {} is {ns_now}, not {host} and {ns}",
                self.host_if,
                self.ns_if
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// The operational state in one line of `ip -o link show` (`… state UP …`).
fn state(out: &Output) -> String {
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    words.find(|w| *w == "state");
    words.next().unwrap_or("UNKNOWN").to_string()
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair; deleting the namespace would too, but the host's
        // end goes first so nothing of it outlives a namespace still held open by a process.
        // Errors are ignored: a half-made pair may not exist, and drop must not panic.
        let _ = Command::new("ip").args(["link", "del", &self.host_if]).output();
        let _ = Command::new("ip").args(["netns", "del", &self.name]).output();
    }
}
