//! Istio's traffic capture (`istio-iptables`, run by the `istio-init` container) as data: the
//! options the init container is given, and the nat-table rules they turn into.
//!
//! The rules follow `tools/istio-iptables` in REDIRECT mode, IPv4: `PREROUTING → ISTIO_INBOUND →
//! ISTIO_IN_REDIRECT` (to 15006) and `OUTPUT → ISTIO_OUTPUT → ISTIO_REDIRECT` (to 15001), with
//! the proxy's UID/GID and loopback handled as Istio does. TPROXY mode and IPv6 are not
//! supported: TPROXY is refused, IPv6 ranges are skipped as Istio skips them without
//! `ENABLE_INBOUND_IPV6`.

use std::fmt;
use std::net::Ipv4Addr;

/// The nat chains Capstan owns, in Istio's names.
pub const CHAINS: [&str; 4] = [
    "ISTIO_INBOUND",
    "ISTIO_REDIRECT",
    "ISTIO_IN_REDIRECT",
    "ISTIO_OUTPUT",
];

/// Ports of the sidecar that inbound capture always leaves alone: Envoy's Prometheus port,
/// the readiness port and the agent's status port (the `-d` Istio's template passes).
pub const SIDECAR_INBOUND_EXCLUDES: [u16; 3] = [15090, 15021, 15020];

/// An invalid capture option.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{option}: {message}")]
pub struct CaptureError {
    /// The option (annotation or flag) at fault.
    pub option: String,
    /// What is wrong with it.
    pub message: String,
}

fn err(option: &str, message: impl Into<String>) -> CaptureError {
    CaptureError {
        option: option.to_string(),
        message: message.into(),
    }
}

/// An IPv4 CIDR, normalized (host bits cleared), as iptables prints it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    /// The network address.
    pub addr: Ipv4Addr,
    /// The prefix length, 0..=32.
    pub prefix: u8,
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

/// Which destinations (or ports) are captured: every one, or a list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Selection<T> {
    /// `*`.
    All,
    /// An explicit list; empty means none.
    Only(Vec<T>),
}

/// The options of `capstan proxy-init`, named after `istio-iptables`' flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureOptions {
    /// `-p`: where outbound TCP is redirected (Envoy's `virtualOutbound`).
    pub proxy_port: u16,
    /// `-z`: where inbound TCP is redirected (`virtualInbound`).
    pub inbound_port: u16,
    /// `-u`: the proxy's UIDs, whose traffic is not captured.
    pub proxy_uids: Vec<u32>,
    /// `-g`: the proxy's GIDs, likewise.
    pub proxy_gids: Vec<u32>,
    /// `-i`: outbound destinations captured.
    pub include_outbound_ranges: Selection<Cidr>,
    /// `-x`: outbound destinations never captured.
    pub exclude_outbound_ranges: Vec<Cidr>,
    /// `-b`: inbound ports captured.
    pub include_inbound_ports: Selection<u16>,
    /// `-d`: inbound ports never captured (only meaningful with `-b '*'`).
    pub exclude_inbound_ports: Vec<u16>,
    /// `-o`: outbound ports never captured.
    pub exclude_outbound_ports: Vec<u16>,
    /// `-q`: outbound ports always captured, whatever the destination.
    pub include_outbound_ports: Vec<u16>,
}

impl Default for CaptureOptions {
    /// Istio's defaults for a sidecar: everything captured except the sidecar's own ports.
    fn default() -> Self {
        CaptureOptions {
            proxy_port: 15001,
            inbound_port: 15006,
            proxy_uids: vec![1337],
            proxy_gids: vec![1337],
            include_outbound_ranges: Selection::All,
            exclude_outbound_ranges: Vec::new(),
            include_inbound_ports: Selection::All,
            exclude_inbound_ports: SIDECAR_INBOUND_EXCLUDES.to_vec(),
            exclude_outbound_ports: Vec::new(),
            include_outbound_ports: Vec::new(),
        }
    }
}

/// Splits Istio's comma-separated list values; blanks between commas are ignored.
fn items(value: &str) -> impl Iterator<Item = &str> {
    value.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Parses a port list like `15090,15021` (empty: none).
pub fn parse_ports(option: &str, value: &str) -> Result<Vec<u16>, CaptureError> {
    items(value)
        .map(|p| {
            p.parse::<u16>()
                .ok()
                .filter(|p| *p != 0)
                .ok_or_else(|| err(option, format!("{p:?} is not a port (1-65535)")))
        })
        .collect()
}

/// Parses `*` or a port list.
pub fn parse_port_selection(option: &str, value: &str) -> Result<Selection<u16>, CaptureError> {
    if value.trim() == "*" {
        return Ok(Selection::All);
    }
    parse_ports(option, value).map(Selection::Only)
}

/// Parses a CIDR list like `10.0.0.0/8,172.16.0.1`; a bare address is a /32. IPv6 entries are
/// accepted and skipped (IPv4 capture only).
pub fn parse_cidrs(option: &str, value: &str) -> Result<Vec<Cidr>, CaptureError> {
    let mut out = Vec::new();
    for item in items(value) {
        let (addr, prefix) = match item.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (item, None),
        };
        if addr.parse::<std::net::Ipv6Addr>().is_ok() {
            continue;
        }
        let addr: Ipv4Addr = addr
            .parse()
            .map_err(|_| err(option, format!("{item:?} is not an IP address or CIDR")))?;
        let prefix = match prefix {
            None => 32,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= 32)
                .ok_or_else(|| err(option, format!("{item:?}: prefix length must be 0-32")))?,
        };
        let mask = if prefix == 0 {
            0
        } else {
            u32::MAX << (32 - prefix)
        };
        out.push(Cidr {
            addr: Ipv4Addr::from(u32::from(addr) & mask),
            prefix,
        });
    }
    Ok(out)
}

/// Parses `*` or a CIDR list.
pub fn parse_cidr_selection(option: &str, value: &str) -> Result<Selection<Cidr>, CaptureError> {
    if value.trim() == "*" {
        return Ok(Selection::All);
    }
    parse_cidrs(option, value).map(Selection::Only)
}

/// Parses a list of numeric user or group ids.
pub fn parse_ids(option: &str, value: &str) -> Result<Vec<u32>, CaptureError> {
    items(value)
        .map(|id| {
            id.parse::<u32>()
                .map_err(|_| err(option, format!("{id:?} is not a numeric id")))
        })
        .collect()
}

/// Checks an interception mode: only Istio's default, `REDIRECT`, is implemented.
pub fn check_mode(value: &str) -> Result<(), CaptureError> {
    match value {
        "REDIRECT" => Ok(()),
        "TPROXY" => Err(err(
            "-m",
            "TPROXY interception is not supported; use REDIRECT",
        )),
        other => Err(err(
            "-m",
            format!("{other:?} is not an interception mode (REDIRECT)"),
        )),
    }
}

fn join<T: ToString>(list: &[T]) -> String {
    list.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn selection<T: ToString>(s: &Selection<T>) -> String {
    match s {
        Selection::All => "*".to_string(),
        Selection::Only(list) => join(list),
    }
}

/// One rule of the nat table, in `iptables` syntax without the table: `-A CHAIN spec...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The chain appended to.
    pub chain: &'static str,
    /// Match and target, e.g. `-p tcp --dport 15021 -j RETURN`.
    pub spec: String,
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "-A {} {}", self.chain, self.spec)
    }
}

impl CaptureOptions {
    /// The `istio-iptables`-style arguments that reproduce these options, as the injected
    /// `istio-init` container runs them.
    pub fn to_args(&self) -> Vec<String> {
        let mut args = vec![
            "-p".to_string(),
            self.proxy_port.to_string(),
            "-z".to_string(),
            self.inbound_port.to_string(),
            "-u".to_string(),
            join(&self.proxy_uids),
            "-g".to_string(),
            join(&self.proxy_gids),
            "-m".to_string(),
            "REDIRECT".to_string(),
            "-i".to_string(),
            selection(&self.include_outbound_ranges),
            "-x".to_string(),
            join(&self.exclude_outbound_ranges),
            "-b".to_string(),
            selection(&self.include_inbound_ports),
            "-d".to_string(),
            join(&self.exclude_inbound_ports),
        ];
        if !self.exclude_outbound_ports.is_empty() {
            args.extend(["-o".to_string(), join(&self.exclude_outbound_ports)]);
        }
        if !self.include_outbound_ports.is_empty() {
            args.extend(["-q".to_string(), join(&self.include_outbound_ports)]);
        }
        args
    }

    /// The nat rules, in order, as `istio-iptables` appends them (REDIRECT mode, IPv4).
    pub fn rules(&self) -> Vec<Rule> {
        let mut rules = Vec::new();
        let mut add = |chain: &'static str, spec: String| rules.push(Rule { chain, spec });
        add(
            "ISTIO_REDIRECT",
            format!("-p tcp -j REDIRECT --to-ports {}", self.proxy_port),
        );
        add(
            "ISTIO_IN_REDIRECT",
            format!("-p tcp -j REDIRECT --to-ports {}", self.inbound_port),
        );

        // Inbound: nothing when no port is captured.
        let inbound = match &self.include_inbound_ports {
            Selection::Only(ports) => !ports.is_empty(),
            Selection::All => true,
        };
        if inbound {
            add("PREROUTING", "-p tcp -j ISTIO_INBOUND".to_string());
            match &self.include_inbound_ports {
                Selection::All => {
                    for port in &self.exclude_inbound_ports {
                        add("ISTIO_INBOUND", format!("-p tcp --dport {port} -j RETURN"));
                    }
                    add("ISTIO_INBOUND", "-p tcp -j ISTIO_IN_REDIRECT".to_string());
                }
                Selection::Only(ports) => {
                    for port in ports {
                        add(
                            "ISTIO_INBOUND",
                            format!("-p tcp --dport {port} -j ISTIO_IN_REDIRECT"),
                        );
                    }
                }
            }
        }

        // Outbound.
        add("OUTPUT", "-p tcp -j ISTIO_OUTPUT".to_string());
        // Port exclusions come before the loopback rules: they apply to calls back to self too.
        for port in &self.exclude_outbound_ports {
            add("ISTIO_OUTPUT", format!("-p tcp --dport {port} -j RETURN"));
        }
        // 127.0.0.6 is the source the proxy binds for inbound passthrough connections.
        add(
            "ISTIO_OUTPUT",
            "-o lo -s 127.0.0.6/32 -j RETURN".to_string(),
        );
        for (flag, ids) in [
            ("--uid-owner", &self.proxy_uids),
            ("--gid-owner", &self.proxy_gids),
        ] {
            for id in ids {
                // The proxy calling the pod's own address (a service VIP resolved to this pod)
                // goes through the inbound path, as if it came from outside.
                add(
                    "ISTIO_OUTPUT",
                    format!("-o lo ! -d 127.0.0.1/32 -m owner {flag} {id} -j ISTIO_IN_REDIRECT"),
                );
                // The app calling itself over loopback by endpoint address: not captured.
                add(
                    "ISTIO_OUTPUT",
                    format!("-o lo -m owner ! {flag} {id} -j RETURN"),
                );
                // The proxy's own upstream connections: never captured (no loop).
                add("ISTIO_OUTPUT", format!("-m owner {flag} {id} -j RETURN"));
            }
        }
        add("ISTIO_OUTPUT", "-d 127.0.0.1/32 -j RETURN".to_string());
        for cidr in &self.exclude_outbound_ranges {
            add("ISTIO_OUTPUT", format!("-d {cidr} -j RETURN"));
        }
        for port in &self.include_outbound_ports {
            add(
                "ISTIO_OUTPUT",
                format!("-p tcp --dport {port} -j ISTIO_REDIRECT"),
            );
        }
        match &self.include_outbound_ranges {
            Selection::All => add("ISTIO_OUTPUT", "-j ISTIO_REDIRECT".to_string()),
            Selection::Only(cidrs) => {
                for cidr in cidrs {
                    add("ISTIO_OUTPUT", format!("-d {cidr} -j ISTIO_REDIRECT"));
                }
            }
        }
        rules
    }

    /// Input for `iptables-restore --noflush` that replaces whatever a previous run installed
    /// and installs these rules, in one atomic transaction: declaring Capstan's chains flushes
    /// them, and the jumps into them found in `current_nat` (the output of `iptables-save -t
    /// nat`) are deleted before being added again. Running it twice leaves one copy.
    pub fn restore_input(&self, current_nat: &str) -> String {
        let mut out = String::from("*nat\n");
        for chain in CHAINS {
            out.push_str(&format!(":{chain} - [0:0]\n"));
        }
        for jump in existing_jumps(current_nat) {
            out.push_str(&format!("-D {jump}\n"));
        }
        for rule in self.rules() {
            out.push_str(&format!("{rule}\n"));
        }
        out.push_str("COMMIT\n");
        out
    }
}

/// Rules of the built-in chains (`PREROUTING`, `OUTPUT`) that jump into Capstan's chains, as
/// `CHAIN spec` from an `iptables-save` listing.
pub fn existing_jumps(save: &str) -> Vec<String> {
    save.lines()
        .filter_map(|line| line.trim().strip_prefix("-A "))
        .filter(|rule| rule.starts_with("PREROUTING ") || rule.starts_with("OUTPUT "))
        .filter(|rule| {
            let mut words = rule.split_whitespace();
            let mut target = None;
            while let Some(w) = words.next() {
                if w == "-j" || w == "--jump" {
                    target = words.next();
                }
            }
            target.is_some_and(|t| CHAINS.contains(&t))
        })
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(opts: &CaptureOptions) -> Vec<String> {
        opts.rules().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn istio_default_sidecar_rules() {
        // What `istio-iptables -p 15001 -z 15006 -u 1337 -g 1337 -m REDIRECT -i '*' -x ''
        // -b '*' -d 15090,15021,15020` appends to the nat table.
        let want = [
            "-A ISTIO_REDIRECT -p tcp -j REDIRECT --to-ports 15001",
            "-A ISTIO_IN_REDIRECT -p tcp -j REDIRECT --to-ports 15006",
            "-A PREROUTING -p tcp -j ISTIO_INBOUND",
            "-A ISTIO_INBOUND -p tcp --dport 15090 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 15021 -j RETURN",
            "-A ISTIO_INBOUND -p tcp --dport 15020 -j RETURN",
            "-A ISTIO_INBOUND -p tcp -j ISTIO_IN_REDIRECT",
            "-A OUTPUT -p tcp -j ISTIO_OUTPUT",
            "-A ISTIO_OUTPUT -o lo -s 127.0.0.6/32 -j RETURN",
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --uid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --uid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -o lo ! -d 127.0.0.1/32 -m owner --gid-owner 1337 -j ISTIO_IN_REDIRECT",
            "-A ISTIO_OUTPUT -o lo -m owner ! --gid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -m owner --gid-owner 1337 -j RETURN",
            "-A ISTIO_OUTPUT -d 127.0.0.1/32 -j RETURN",
            "-A ISTIO_OUTPUT -j ISTIO_REDIRECT",
        ];
        assert_eq!(rules(&CaptureOptions::default()), want);
    }

    #[test]
    fn selections_and_exclusions() {
        let opts = CaptureOptions {
            include_outbound_ranges: Selection::Only(
                parse_cidrs("-i", "10.96.0.0/12,192.168.1.7").expect("valid"),
            ),
            exclude_outbound_ranges: parse_cidrs("-x", "10.96.0.10/32").expect("valid"),
            include_inbound_ports: Selection::Only(vec![9080]),
            exclude_outbound_ports: vec![3306],
            include_outbound_ports: vec![443],
            proxy_gids: vec![],
            ..CaptureOptions::default()
        };
        let got = rules(&opts);
        let inbound: Vec<&String> = got.iter().filter(|r| r.contains("ISTIO_INBOUND")).collect();
        assert_eq!(
            inbound,
            [
                "-A PREROUTING -p tcp -j ISTIO_INBOUND",
                "-A ISTIO_INBOUND -p tcp --dport 9080 -j ISTIO_IN_REDIRECT"
            ]
        );
        let output: Vec<&str> = got
            .iter()
            .filter_map(|r| r.strip_prefix("-A ISTIO_OUTPUT "))
            .collect();
        assert_eq!(
            output,
            [
                // Port exclusions first: they hold for calls back to the pod itself too.
                "-p tcp --dport 3306 -j RETURN",
                "-o lo -s 127.0.0.6/32 -j RETURN",
                "-o lo ! -d 127.0.0.1/32 -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT",
                "-o lo -m owner ! --uid-owner 1337 -j RETURN",
                "-m owner --uid-owner 1337 -j RETURN",
                "-d 127.0.0.1/32 -j RETURN",
                "-d 10.96.0.10/32 -j RETURN",
                "-p tcp --dport 443 -j ISTIO_REDIRECT",
                "-d 10.96.0.0/12 -j ISTIO_REDIRECT",
                "-d 192.168.1.7/32 -j ISTIO_REDIRECT",
            ]
        );
        // No inbound ports: no inbound capture at all. No outbound ranges: nothing redirected
        // but the explicitly included ports.
        let none = CaptureOptions {
            include_inbound_ports: Selection::Only(vec![]),
            include_outbound_ranges: Selection::Only(vec![]),
            ..CaptureOptions::default()
        };
        let got = rules(&none);
        assert!(!got.iter().any(|r| r.contains("ISTIO_INBOUND")), "{got:?}");
        assert!(
            !got.iter().any(|r| r.ends_with("-j ISTIO_REDIRECT")),
            "{got:?}"
        );
    }

    #[test]
    fn parsing() {
        assert_eq!(
            parse_cidrs("-i", "10.1.2.3/8, ,fd00::/8,0.0.0.0/0").expect("valid"),
            [
                Cidr {
                    addr: Ipv4Addr::new(10, 0, 0, 0),
                    prefix: 8
                },
                Cidr {
                    addr: Ipv4Addr::UNSPECIFIED,
                    prefix: 0
                },
            ]
        );
        assert_eq!(parse_cidr_selection("-i", " * "), Ok(Selection::All));
        assert_eq!(parse_port_selection("-b", ""), Ok(Selection::Only(vec![])));
        assert!(parse_cidrs("-x", "10.0.0.0/40").is_err());
        assert!(parse_cidrs("-x", "example.com").is_err());
        assert!(parse_ports("-d", "0").is_err());
        assert!(parse_ports("-d", "15021,x").is_err());
        assert!(parse_ids("-u", "root").is_err());
        assert!(check_mode("REDIRECT").is_ok());
        assert!(check_mode("TPROXY")
            .unwrap_err()
            .message
            .contains("not supported"));
        assert!(check_mode("redirect").is_err());
    }

    #[test]
    fn restore_replaces_a_previous_install() {
        let first = CaptureOptions::default().restore_input("");
        assert!(first.starts_with("*nat\n:ISTIO_INBOUND - [0:0]\n"));
        assert!(first.ends_with("COMMIT\n"));
        assert!(!first.contains("-D "));
        // What iptables-save shows after the first run (it reorders matches).
        let saved = "*nat\n:PREROUTING ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\n:ISTIO_OUTPUT - [0:0]\n\
            -A PREROUTING -p tcp -j ISTIO_INBOUND\n-A PREROUTING -p tcp -j KUBE-OTHER\n\
            -A OUTPUT -p tcp -j ISTIO_OUTPUT\n\
            -A ISTIO_OUTPUT ! -d 127.0.0.1/32 -o lo -m owner --uid-owner 1337 -j ISTIO_IN_REDIRECT\nCOMMIT\n";
        assert_eq!(
            existing_jumps(saved),
            [
                "PREROUTING -p tcp -j ISTIO_INBOUND",
                "OUTPUT -p tcp -j ISTIO_OUTPUT"
            ]
        );
        let second = CaptureOptions::default().restore_input(saved);
        let deletes: Vec<&str> = second.lines().filter(|l| l.starts_with("-D ")).collect();
        assert_eq!(
            deletes,
            [
                "-D PREROUTING -p tcp -j ISTIO_INBOUND",
                "-D OUTPUT -p tcp -j ISTIO_OUTPUT"
            ]
        );
        // The deletes come before the jumps are added again.
        let pos = |needle: &str| second.find(needle).expect(needle);
        assert!(pos("-D OUTPUT") < pos("-A OUTPUT"));
    }

    #[test]
    fn args_round_trip_shape() {
        let opts = CaptureOptions {
            exclude_outbound_ports: vec![3306],
            include_outbound_ports: vec![443, 8443],
            ..CaptureOptions::default()
        };
        let args = opts.to_args();
        let tail: Vec<&str> = args
            .iter()
            .rev()
            .take(4)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(tail, ["-o", "3306", "-q", "443,8443"]);
    }
}
